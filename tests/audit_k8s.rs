//! `stockade audit` on Kubernetes manifests: the pod `stockade k8s render` prints raises
//! nothing, and each hostile manifest raises its rule at the field at fault, for every
//! workload kind that carries a pod spec.

use serde_json::{json, Value};
use stockade::audit::k8s::{audit_manifest, is_manifest};
use stockade::k8s::{self, Kind, Options};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides};

/// The rendered, hardened pod.
fn clean_pod() -> Value {
    let p = Policy::default()
        .validate(None, &PolicyOverrides::default(), &HostPolicyEnv)
        .unwrap();
    let docs = k8s::render(&p, &Options::new(Kind::Pod)).unwrap();
    docs.into_iter()
        .map(|d| d.object)
        .find(|o| o["kind"] == "Pod")
        .unwrap()
}

fn set(v: &mut Value, pointer: &str, new: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match v.pointer_mut(parent).unwrap_or_else(|| panic!("{pointer}")) {
        Value::Object(m) => {
            m.insert(key.to_string(), new);
        }
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = new,
        _ => panic!("{pointer}"),
    }
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    v.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
}

fn findings(doc: &Value) -> Vec<(String, String)> {
    let yaml = serde_yaml_ng::to_string(doc).unwrap();
    assert!(is_manifest(&yaml));
    let reports = audit_manifest(&yaml).unwrap();
    assert_eq!(reports.len(), 1);
    reports[0]
        .report
        .findings
        .iter()
        .map(|f| (f.rule.to_string(), f.pointer.clone()))
        .collect()
}

struct Case {
    name: &'static str,
    /// Edits to the pod spec: (pointer relative to the pod spec, new value or null to remove).
    edits: &'static [(&'static str, &'static str)],
    want: &'static str,
    /// Where the finding points, relative to the pod spec.
    at: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "privileged",
        edits: &[("/containers/0/securityContext/privileged", "true")],
        want: "STK-CAP-001",
        at: "/containers/0/securityContext/privileged",
    },
    Case {
        name: "hostPath /",
        edits: &[("/volumes/0", r#"{"name":"tmp","hostPath":{"path":"/"}}"#)],
        want: "STK-FS-002",
        at: "/volumes/0/hostPath/path",
    },
    Case {
        name: "hostPath docker.sock",
        edits: &[(
            "/volumes/0",
            r#"{"name":"tmp","hostPath":{"path":"/var/run/docker.sock"}}"#,
        )],
        want: "STK-FS-003",
        at: "/volumes/0/hostPath/path",
    },
    Case {
        name: "hostPath elsewhere",
        edits: &[(
            "/volumes/0",
            r#"{"name":"tmp","hostPath":{"path":"/data"}}"#,
        )],
        want: "STK-FS-004",
        at: "/volumes/0/hostPath/path",
    },
    Case {
        name: "hostNetwork",
        edits: &[("/hostNetwork", "true")],
        want: "STK-NS-002",
        at: "/hostNetwork",
    },
    Case {
        name: "hostPID",
        edits: &[("/hostPID", "true")],
        want: "STK-NS-001",
        at: "/hostPID",
    },
    Case {
        name: "hostIPC",
        edits: &[("/hostIPC", "true")],
        want: "STK-NS-003",
        at: "/hostIPC",
    },
    Case {
        name: "added SYS_ADMIN",
        edits: &[(
            "/containers/0/securityContext/capabilities/add",
            r#"["SYS_ADMIN"]"#,
        )],
        want: "STK-CAP-001",
        at: "/containers/0/securityContext/capabilities/add/0",
    },
    Case {
        name: "added NET_RAW",
        edits: &[(
            "/containers/0/securityContext/capabilities/add",
            r#"["NET_RAW"]"#,
        )],
        want: "STK-CAP-003",
        at: "/containers/0/securityContext/capabilities/add/0",
    },
    Case {
        name: "no drop ALL",
        edits: &[("/containers/0/securityContext/capabilities/drop", "null")],
        want: "STK-CAP-004",
        at: "/containers/0/securityContext/capabilities/drop",
    },
    Case {
        name: "allowPrivilegeEscalation true",
        edits: &[(
            "/containers/0/securityContext/allowPrivilegeEscalation",
            "true",
        )],
        want: "STK-PROC-001",
        at: "/containers/0/securityContext/allowPrivilegeEscalation",
    },
    Case {
        name: "missing seccomp",
        edits: &[
            ("/containers/0/securityContext/seccompProfile", "null"),
            ("/securityContext/seccompProfile", "null"),
        ],
        want: "STK-SEC-001",
        at: "/containers/0/securityContext",
    },
    Case {
        name: "seccomp Unconfined",
        edits: &[(
            "/containers/0/securityContext/seccompProfile",
            r#"{"type":"Unconfined"}"#,
        )],
        want: "STK-SEC-001",
        at: "/containers/0/securityContext/seccompProfile",
    },
    Case {
        name: "AppArmor Unconfined",
        edits: &[(
            "/containers/0/securityContext/appArmorProfile",
            r#"{"type":"Unconfined"}"#,
        )],
        want: "STK-MAC-002",
        at: "/containers/0/securityContext/appArmorProfile",
    },
    Case {
        name: "runAsUser 0",
        edits: &[("/containers/0/securityContext/runAsUser", "0")],
        want: "STK-PROC-002",
        at: "/containers/0/securityContext/runAsUser",
    },
    Case {
        name: "writable root",
        edits: &[(
            "/containers/0/securityContext/readOnlyRootFilesystem",
            "false",
        )],
        want: "STK-FS-001",
        at: "/containers/0/securityContext/readOnlyRootFilesystem",
    },
    Case {
        name: "procMount Unmasked",
        edits: &[("/containers/0/securityContext/procMount", r#""Unmasked""#)],
        want: "STK-FS-006",
        at: "/containers/0/securityContext/procMount",
    },
    Case {
        name: "no memory limit",
        edits: &[("/containers/0/resources/limits/memory", "null")],
        want: "STK-RES-001",
        at: "/containers/0/resources/limits",
    },
    Case {
        name: "unsafe sysctl",
        edits: &[(
            "/securityContext/sysctls",
            r#"[{"name":"kernel.msgmax","value":"1"}]"#,
        )],
        want: "STK-SYS-002",
        at: "/securityContext/sysctls/0",
    },
];

/// The pod spec wrapped as each workload kind: (kind, where its pod spec sits).
fn wrappers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Pod", "/spec"),
        ("Job", "/spec/template/spec"),
        ("Deployment", "/spec/template/spec"),
        ("CronJob", "/spec/jobTemplate/spec/template/spec"),
        ("SandboxTemplate", "/spec/podTemplate/spec"),
    ]
}

fn wrap(kind: &str, spec: Value) -> Value {
    let api = match kind {
        "Pod" => "v1",
        "Deployment" => "apps/v1",
        "SandboxTemplate" => k8s::AGENT_SANDBOX_API,
        _ => "batch/v1",
    };
    let inner = match kind {
        "Pod" => spec,
        "Job" | "Deployment" => json!({"template": {"spec": spec}}),
        "CronJob" => json!({"jobTemplate": {"spec": {"template": {"spec": spec}}}}),
        "SandboxTemplate" => json!({"podTemplate": {"spec": spec}}),
        _ => unreachable!(),
    };
    json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}, "spec": inner})
}

#[test]
fn the_rendered_pod_raises_nothing_in_any_wrapper() {
    let spec = clean_pod()["spec"].clone();
    for (kind, _) in wrappers() {
        assert_eq!(findings(&wrap(kind, spec.clone())), vec![], "{kind}");
    }
}

#[test]
fn each_hostile_manifest_raises_its_rule_at_its_field() {
    for (kind, at) in wrappers() {
        for c in CASES {
            let mut spec = clean_pod()["spec"].clone();
            for (ptr, value) in c.edits {
                if *value == "null" {
                    remove(&mut spec, ptr);
                } else {
                    set(&mut spec, ptr, serde_json::from_str(value).unwrap());
                }
            }
            let got = findings(&wrap(kind, spec));
            let want = (c.want.to_string(), format!("{at}{}", c.at));
            assert!(
                got.contains(&want),
                "{kind} / {}: want {want:?}, got {got:#?}",
                c.name
            );
        }
    }
}

#[test]
fn an_unconfined_apparmor_annotation_is_reported_where_it_is() {
    let mut pod = clean_pod();
    remove(
        &mut pod,
        "/spec/containers/0/securityContext/appArmorProfile",
    );
    pod["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/sandbox"] =
        json!("unconfined");
    let got = findings(&pod);
    assert!(
        got.contains(&(
            "STK-MAC-002".into(),
            "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1sandbox".into()
        )),
        "{got:#?}"
    );
}

#[test]
fn oci_specs_and_manifests_without_workloads_are_told_apart() {
    assert!(!is_manifest(r#"{"ociVersion": "1.0.2"}"#));
    assert!(!is_manifest("just text"));
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    assert!(is_manifest(cm));
    let e = audit_manifest(cm).unwrap_err().to_string();
    assert!(e.contains("no workload in the manifest"), "{e}");
}

#[test]
fn the_cli_audits_a_rendered_manifest_and_a_hostile_one_as_sarif() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let bin = env!("CARGO_BIN_EXE_stockade");
    let st = std::process::Command::new(bin)
        .args(["k8s", "render", "-o"])
        .arg(&good)
        .status()
        .unwrap();
    assert!(st.success());
    let out = std::process::Command::new(bin)
        .args(["audit", "--format", "json"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // Only the node installer is privileged (it writes the kubelet's directory and loads
    // kernel profiles), and the audit says so; the sandbox's pod raises nothing.
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let messages: Vec<&str> = report["targets"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(!messages.is_empty());
    assert!(
        messages
            .iter()
            .all(|m| m.starts_with("DaemonSet/stockade-sandbox-profiles: ")),
        "{messages:#?}"
    );
    let mut pod = clean_pod();
    pod["spec"]["hostNetwork"] = json!(true);
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, serde_yaml_ng::to_string(&pod).unwrap()).unwrap();
    let out = std::process::Command::new(bin)
        .args(["audit", "--format", "sarif", "--fail-on", "high"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(results.iter().any(|r| r["ruleId"] == "STK-NS-002"
        && r["message"]["text"]
            .as_str()
            .unwrap()
            .contains("Pod/stockade-sandbox")));
}
