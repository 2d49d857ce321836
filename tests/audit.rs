//! `stockade audit` end to end through the binary: golden outputs for well-known specs,
//! stockade's own specs, SARIF against the SARIF 2.1.0 schema, exit codes, stdin, bundles,
//! malformed input, `--diff`, and the generated rules document.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test --test audit`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_stockade");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit")
}

fn stockade(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run stockade")
}

fn stockade_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stockade");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// The fixtures with golden outputs, and the findings each must raise (a golden file could
/// be regenerated wrong; these claims cannot).
const GOLDEN: &[(&str, &[&str])] = &[
    // runc 1.1.5 `runc spec`: no seccomp, root, ambient caps, no limits.
    (
        "runc-spec.json",
        &[
            "STK-SEC-001",
            "STK-PROC-002",
            "STK-CAP-005",
            "STK-RES-001",
            "STK-RES-003",
        ],
    ),
    // containerd 1.6.20 `ctr oci spec`: no seccomp, root, writable root, NET_RAW.
    (
        "ctr-oci-spec.json",
        &[
            "STK-SEC-001",
            "STK-PROC-002",
            "STK-FS-001",
            "STK-CAP-003",
            "STK-RES-001",
        ],
    ),
    // Everything a privileged container with host mounts has.
    (
        "privileged.json",
        &[
            "STK-CAP-001",
            "STK-CAP-002",
            "STK-DEV-001",
            "STK-DEV-002",
            "STK-FS-002",
            "STK-FS-003",
            "STK-FS-005",
            "STK-FS-006",
            "STK-FS-007",
            "STK-FS-008",
            "STK-MAC-002",
            "STK-NS-001",
            "STK-NS-003",
            "STK-NS-008",
            "STK-PROC-001",
            "STK-SEC-001",
            "STK-SYS-001",
            "STK-SYS-002",
            "STK-HOOK-001",
        ],
    ),
    (
        "seccomp-conditional.json",
        &["STK-SEC-003", "STK-SEC-004", "STK-SEC-005"],
    ),
    (
        "seccomp-denylist.json",
        &["STK-SEC-002", "STK-SEC-003", "STK-SEC-004"],
    ),
    // The runtime-spec schema's good fixtures.
    (
        "schema-good-minimal.json",
        &["STK-SEC-001", "STK-NS-001", "STK-FS-001"],
    ),
    (
        "schema-good-minimal-for-start.json",
        &["STK-SEC-001", "STK-PROC-002"],
    ),
    (
        "schema-good-spec-example.json",
        &["STK-HOOK-001", "STK-SYS-002", "STK-SEC-002", "STK-DEV-002"],
    ),
    ("schema-good-linux-netdevice.json", &["STK-SEC-001"]),
    ("schema-good-linux-rdma.json", &["STK-SEC-001"]),
];

#[test]
fn golden_outputs_for_known_specs() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = fixtures();
    for (name, must) in GOLDEN {
        let path = dir.join(name);
        let o = stockade(&["audit", "--format", "json", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        let mut v: Value = serde_json::from_slice(&o.stdout).unwrap();
        // The path differs between checkouts; the golden file names the fixture.
        v["targets"][0]["source"] = Value::String(name.to_string());
        v["tool"]["version"] = Value::String("VERSION".into());
        let got = serde_json::to_string_pretty(&v).unwrap() + "\n";
        let golden = dir.join("golden").join(name);
        if update {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", golden.display()));
        assert_eq!(
            got,
            want,
            "{name}: output differs from {}",
            golden.display()
        );
        let rules: Vec<&str> = v["targets"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap())
            .collect();
        for id in *must {
            assert!(rules.contains(id), "{name}: {id} not raised; got {rules:?}");
        }
    }
}

#[test]
fn every_rule_fires_on_some_fixture() {
    let mut fired = std::collections::BTreeSet::new();
    for (name, _) in GOLDEN {
        let o = stockade(&[
            "audit",
            "--format",
            "json",
            fixtures().join(name).to_str().unwrap(),
        ]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        for f in v["targets"][0]["findings"].as_array().unwrap() {
            fired.insert(f["rule"].as_str().unwrap().to_string());
        }
    }
    let catalog: Value =
        serde_json::from_slice(&stockade(&["audit", "--list-rules", "--format", "json"]).stdout)
            .unwrap();
    let missing: Vec<&str> = catalog
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .filter(|id| !fired.contains(*id))
        .collect();
    // Rules a spec cannot show together with the fixtures' other weaknesses are proven by
    // the table-driven unit tests; every other rule must appear in a real-world fixture.
    let unit_only = [
        "STK-NS-002",
        "STK-NS-004",
        "STK-NS-005",
        "STK-DEV-003",
        "STK-FS-004",
    ];
    let unexpected: Vec<&&str> = missing.iter().filter(|m| !unit_only.contains(m)).collect();
    assert!(
        unexpected.is_empty(),
        "never fired on a fixture: {unexpected:?}"
    );
}

/// `stockade spec` for the default policy and every example policy, as text.
fn stockade_specs() -> Vec<(String, String)> {
    let work = tempfile::tempdir().unwrap();
    let ws = work.path().join("workspace");
    let input = work.path().join("input");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&input).unwrap();
    let mut runs: Vec<(String, Vec<String>)> = vec![("default policy".into(), vec![])];
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&policies)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut args = vec!["--policy".to_string(), f.display().to_string()];
        // Host directories the examples name may not exist here: point them at ours.
        if text.contains("workspace") {
            args.extend(["--workspace".into(), ws.display().to_string()]);
        }
        if text.contains("input") {
            args.extend(["--input".into(), input.display().to_string()]);
        }
        runs.push((f.display().to_string(), args));
    }
    runs.into_iter()
        .map(|(name, mut args)| {
            let mut all = vec!["spec".to_string()];
            all.append(&mut args);
            all.extend(["--".into(), "sh".into(), "-c".into(), "true".into()]);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let o = stockade(&refs);
            assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
            (name, stdout(&o))
        })
        .collect()
}

#[test]
fn stockade_specs_have_no_high_or_critical_finding() {
    let specs = stockade_specs();
    assert!(!specs.is_empty());
    for (name, spec) in specs {
        let o = stockade_stdin(
            &["audit", "--format", "json", "--fail-on", "high", "-"],
            spec.as_bytes(),
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{name}: high or critical findings: {}",
            serde_json::to_string_pretty(&v["targets"][0]["findings"]).unwrap()
        );
        // And the protections stockade promises are each seen by the audit.
        let rules: Vec<&str> = v["targets"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap())
            .collect();
        for absent in [
            "STK-SEC-001",
            "STK-PROC-001",
            "STK-PROC-002",
            "STK-FS-001",
            "STK-RES-001",
            "STK-RES-003",
            "STK-DEV-003",
        ] {
            assert!(!rules.contains(&absent), "{name}: {absent} raised");
        }
    }
}

#[test]
fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sarif-schema-2.1.0.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft4::new(&schema).expect("the SARIF schema compiles");
    let dir = fixtures();
    let paths: Vec<String> = GOLDEN
        .iter()
        .map(|(n, _)| dir.join(n).display().to_string())
        .collect();
    let mut args = vec!["audit", "--format", "sarif"];
    args.extend(paths.iter().map(String::as_str));
    let o = stockade(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let sarif: Value = serde_json::from_slice(&o.stdout).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "SARIF invalid: {errors:#?}");

    // One result per finding, each pointing at its file, line and JSON pointer.
    let run = &sarif["runs"][0];
    let results = run["results"].as_array().unwrap();
    let json: Value = serde_json::from_slice(
        &stockade(&{
            let mut a = vec!["audit", "--format", "json"];
            a.extend(paths.iter().map(String::as_str));
            a
        })
        .stdout,
    )
    .unwrap();
    let total: u64 = json["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["summary"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(results.len() as u64, total);
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    for r in results {
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], r["ruleId"]);
        let loc = &r["locations"][0];
        assert!(
            loc["physicalLocation"]["region"]["startLine"]
                .as_u64()
                .unwrap()
                >= 1
        );
        assert!(loc["logicalLocations"][0]["fullyQualifiedName"]
            .as_str()
            .unwrap()
            .starts_with('/'));
    }
}

#[test]
fn sarif_regions_point_at_the_field() {
    let path = fixtures().join("privileged.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let o = stockade(&["audit", "--format", "sarif", path.to_str().unwrap()]);
    let sarif: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == "STK-MAC-002")
        .expect("unconfined AppArmor reported");
    let line = r["locations"][0]["physicalLocation"]["region"]["startLine"]
        .as_u64()
        .unwrap() as usize;
    assert!(
        text.lines()
            .nth(line - 1)
            .unwrap()
            .contains("\"unconfined\""),
        "line {line} is not the apparmorProfile line"
    );
}

#[test]
fn fail_on_sets_the_exit_code() {
    let privileged = fixtures().join("privileged.json");
    let runc = fixtures().join("runc-spec.json");
    let cases: &[(&Path, Option<&str>, i32)] = &[
        (&privileged, None, 0),
        (&privileged, Some("critical"), 1),
        (&runc, Some("critical"), 0),
        (&runc, Some("high"), 1),
        (&runc, Some("info"), 1),
    ];
    for (path, level, want) in cases {
        let mut args = vec!["audit", path.to_str().unwrap()];
        if let Some(l) = level {
            args.extend(["--fail-on", l]);
        }
        let o = stockade(&args);
        assert_eq!(o.status.code(), Some(*want), "{args:?}: {}", stderr(&o));
    }
    let o = stockade(&["audit", "--fail-on", "severe", runc.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("unknown severity `severe`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bundles_stdin_and_files_give_the_same_report() {
    let bundle = tempfile::tempdir().unwrap();
    let text = std::fs::read(fixtures().join("runc-spec.json")).unwrap();
    std::fs::write(bundle.path().join("config.json"), &text).unwrap();
    let by_dir = stockade(&["audit", "--format", "json", bundle.path().to_str().unwrap()]);
    let by_stdin = stockade_stdin(&["audit", "--format", "json", "-"], &text);
    let a: Value = serde_json::from_slice(&by_dir.stdout).unwrap();
    let b: Value = serde_json::from_slice(&by_stdin.stdout).unwrap();
    assert_eq!(a["targets"][0]["findings"], b["targets"][0]["findings"]);
    assert_eq!(b["targets"][0]["source"], "-");
    assert!(a["targets"][0]["source"]
        .as_str()
        .unwrap()
        .ends_with("config.json"));
}

#[test]
fn containerd_settings_in_the_environment_do_not_disturb_file_audits() {
    let path = fixtures().join("runc-spec.json");
    let o = Command::new(BIN)
        .args(["audit", path.to_str().unwrap()])
        .env("CONTAINERD_NAMESPACE", "k8s.io")
        .env("CONTAINERD_ADDRESS", "/nonexistent.sock")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn malformed_input_exits_125_with_one_line_naming_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "truncated.json",
            "{\"ociVersion\": \"1.0.2\", \"process\": {",
            "not valid JSON",
        ),
        ("array.json", "[]", "not a JSON object"),
        ("noversion.json", "{\"process\": {}}", "ociVersion"),
        (
            "badtype.json",
            "{\"ociVersion\": \"1.0.2\",\n\"linux\": {\"seccomp\": {\"defaultAction\": 3}}}",
            "line 2",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let good = fixtures().join("runc-spec.json");
        let o = stockade(&["audit", good.to_str().unwrap(), path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(125), "{name}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        assert!(
            o.stdout.is_empty(),
            "{name}: nothing is printed when an input is bad"
        );
    }
    let o = stockade(&["audit", "/nonexistent/config.json"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("/nonexistent/config.json: cannot read"));
    let o = stockade(&["audit"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("nothing to audit"));
    let o = stockade_stdin(&["audit", "-"], b"not json");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).starts_with("stockade: -: not valid JSON"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn diff_shows_only_security_relevant_changes() {
    let old = fixtures().join("ctr-oci-spec.json");
    let new = fixtures().join("privileged.json");
    let o = stockade(&[
        "audit",
        "--diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "+ loosened   capabilities  CAP_SYS_ADMIN gained in bounding, effective, inheritable, permitted, ambient",
        "+ loosened   namespaces    pid namespace: its own → the host's",
        "+ loosened   process       noNewPrivileges true → false",
        "+ loosened   mounts        mount added: /var/run/docker.sock bind /var/run/docker.sock",
        "+ loosened   paths         /proc/kcore no longer masked",
        "+ loosened   hooks         hook added: prestart /usr/bin/nvidia-container-runtime-hook",
        "+ loosened   devices       device rule added: allow a *:* rwm",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    // The command line differs between the two (args); it is not security-relevant.
    assert!(!out.contains("args"), "{out}");

    // The reverse direction tightens (unconfined AppArmor becoming no profile is only a
    // change), and `--fail-on` looks at new findings only: the one new finding is medium.
    let back = stockade(&[
        "audit",
        "--fail-on",
        "high",
        "--diff",
        new.to_str().unwrap(),
        old.to_str().unwrap(),
    ]);
    assert_eq!(back.status.code(), Some(0), "{}", stdout(&back));
    assert!(!stdout(&back).contains("+ loosened"), "{}", stdout(&back));
    let fwd = stockade(&[
        "audit",
        "--fail-on",
        "critical",
        "--diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert_eq!(fwd.status.code(), Some(1));

    let json = stockade(&[
        "audit",
        "--format",
        "json",
        "--diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v["diff"]["new_findings"].as_array().unwrap().len() > 10);
}

#[test]
fn the_rules_document_is_current() {
    let o = stockade(&["audit", "--list-rules", "--format", "markdown"]);
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit-rules.md");
    let want = std::fs::read_to_string(&doc).unwrap();
    assert!(
        stdout(&o) == want,
        "docs/audit-rules.md is stale: run `stockade audit --list-rules --format markdown > docs/audit-rules.md`"
    );
}

#[test]
fn two_hundred_specs_are_audited_in_one_process() {
    // Many specs in one invocation: each gets its own report, in order. (How fast is a
    // benchmark's question, not a test's: shared machines are noisy.)
    let text = std::fs::read_to_string(fixtures().join("privileged.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..200 {
        let p = dir.path().join(format!("{i}.json"));
        std::fs::write(&p, &text).unwrap();
        paths.push(p.display().to_string());
    }
    let mut args = vec!["audit", "--format", "json"];
    args.extend(paths.iter().map(String::as_str));
    let o = stockade(&args);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let targets = v["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 200);
    let first = serde_json::to_string(&targets[0]["findings"]).unwrap();
    assert!(first.len() > 2, "the privileged spec has findings");
    for t in targets {
        assert_eq!(serde_json::to_string(&t["findings"]).unwrap(), first);
    }
}
