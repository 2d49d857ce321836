//! Every document `stockade k8s render` prints validates offline against Kubernetes' own
//! JSON schemas (the `kubernetes-validate` package in stockade's venv, strict mode, two
//! recent minor versions), and the rendered pod meets each rule of the Pod Security
//! Standards' `restricted` level, stated here one by one.
//!
//! agent-sandbox's kinds are not in Kubernetes' schemas: their embedded pod spec is
//! validated as a Pod, and their own fields are checked against the table below (taken from
//! the `extensions.agents.x-k8s.io/v1beta1` CRDs). With `AGENT_SANDBOX_CRDS` set to a
//! checkout's `k8s/crds` directory, they are also validated against the CRDs' own
//! `openAPIV3Schema`, unknown fields refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use stockade::k8s::{self, Kind, Options};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides, ValidatedPolicy};

/// Two recent minor versions the schemas are checked against.
const KUBERNETES_VERSIONS: &[&str] = &["1.36.0", "1.37.0"];

fn venv() -> Option<PathBuf> {
    let dir = std::env::var_os("STOCKADE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/stockade-venv"));
    if dir.join("bin/kubernetes-validate").exists() {
        return Some(dir);
    }
    let why = format!(
        "no kubernetes-validate in {} (scripts/setup.sh installs it)",
        dir.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

fn policy(o: PolicyOverrides) -> ValidatedPolicy {
    Policy::default()
        .validate(None, &o, &HostPolicyEnv)
        .unwrap()
}

fn policies() -> Vec<(&'static str, ValidatedPolicy)> {
    vec![
        ("default", policy(PolicyOverrides::default())),
        (
            "loopback-caps",
            policy(PolicyOverrides {
                network: Some("loopback".into()),
                user: Some("1000:1000".into()),
                cap_add: vec!["NET_BIND_SERVICE".into()],
                cpus: Some("0.25".into()),
                ..Default::default()
            }),
        ),
        (
            "managed-workspace",
            policy(PolicyOverrides {
                read_write_root: true,
                disk: Some("512M".into()),
                workspace_size: Some("256M".into()),
                ..Default::default()
            }),
        ),
    ]
}

const KINDS: [Kind; 4] = [Kind::Pod, Kind::Job, Kind::SandboxTemplate, Kind::WarmPool];

fn rendered() -> Vec<(String, Vec<k8s::Document>)> {
    let mut out = Vec::new();
    for (pname, p) in policies() {
        for kind in KINDS {
            let mut o = Options::new(kind);
            o.command = vec!["sleep".into(), "1".into()];
            out.push((format!("{pname}.{kind:?}"), k8s::render(&p, &o).unwrap()));
        }
    }
    out
}

/// Runs `kubernetes-validate --strict` on `docs` for every version; returns its output.
fn validate(venv: &Path, dir: &Path, name: &str, docs: &[Value]) -> String {
    let path = dir.join(format!("{name}.yaml"));
    let yaml: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_yaml_ng::to_string(d).unwrap()))
        .collect();
    std::fs::write(&path, yaml).unwrap();
    let mut all = String::new();
    for v in KUBERNETES_VERSIONS {
        let out = Command::new(venv.join("bin/kubernetes-validate"))
            .args(["--strict", "--no-warn", "-k", v])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} against {v}:\n{text}");
        assert_eq!(
            text.matches("passed for resource").count(),
            docs.len(),
            "{name} against {v}: not every document was checked:\n{text}"
        );
        all += &text;
    }
    all
}

/// The pod an agent-sandbox object would create, as a Pod the schemas know.
fn embedded_pod(d: &Value) -> Option<Value> {
    let t = d["spec"].get("podTemplate")?;
    Some(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "embedded", "labels": t["metadata"]["labels"], "annotations": t["metadata"]["annotations"]},
        "spec": t["spec"],
    }))
}

#[test]
fn every_rendered_document_validates_against_the_kubernetes_schemas() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (name, docs) in rendered() {
        let mut core = Vec::new();
        for d in &docs {
            if d.object["apiVersion"] == k8s::AGENT_SANDBOX_API {
                check_agent_sandbox_fields(&name, &d.object);
                if let Some(pod) = embedded_pod(&d.object) {
                    core.push(pod);
                }
            } else {
                core.push(d.object.clone());
            }
        }
        validate(&venv, dir.path(), &name, &core);
        checked += core.len();
    }
    assert!(checked >= 3 * 4 * 4, "checked only {checked} documents");
}

#[test]
fn the_validator_rejects_a_broken_pod() {
    // The test above would prove nothing if the validator accepted anything.
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let docs = k8s::render(
        &policy(PolicyOverrides::default()),
        &Options::new(Kind::Pod),
    )
    .unwrap();
    let mut pod = docs.last().unwrap().object.clone();
    pod["spec"]["containers"][0]["securityContext"]["runAsUsr"] = json!(1);
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&pod).unwrap()).unwrap();
    let out = Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "-k", KUBERNETES_VERSIONS[0]])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a misspelt field passed strict validation"
    );
}

/// The fields of the agent-sandbox kinds stockade emits, from the v1beta1 CRDs: (kind, JSON
/// pointer, JSON type).
const AGENT_SANDBOX_FIELDS: &[(&str, &str, &str)] = &[
    ("SandboxTemplate", "/spec/podTemplate/spec", "object"),
    (
        "SandboxTemplate",
        "/spec/podTemplate/metadata/labels",
        "object",
    ),
    (
        "SandboxTemplate",
        "/spec/podTemplate/metadata/annotations",
        "object",
    ),
    ("SandboxTemplate", "/spec/networkPolicyManagement", "string"),
    ("SandboxTemplate", "/spec/networkPolicy/ingress", "array"),
    ("SandboxTemplate", "/spec/networkPolicy/egress", "array"),
    ("SandboxTemplate", "/spec/envVarsInjectionPolicy", "string"),
    (
        "SandboxTemplate",
        "/spec/volumeClaimTemplatesPolicy",
        "string",
    ),
    ("SandboxWarmPool", "/spec/replicas", "integer"),
    ("SandboxWarmPool", "/spec/sandboxTemplateRef/name", "string"),
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
    }
}

/// Every leaf of `spec` outside the pod template is in the table, with its type.
fn check_agent_sandbox_fields(name: &str, d: &Value) {
    let kind = d["kind"].as_str().unwrap();
    let mut leaves = Vec::new();
    // Objects the table names (the pod spec, labels, annotations) are leaves: their
    // contents are the pod's, validated as a Pod.
    fn walk(kind: &str, v: &Value, at: String, out: &mut Vec<(String, &'static str)>) {
        let named = AGENT_SANDBOX_FIELDS
            .iter()
            .any(|(k, p, _)| *k == kind && *p == at);
        match v {
            Value::Object(m) if !m.is_empty() && !named => {
                for (k, x) in m {
                    walk(kind, x, format!("{at}/{k}"), out);
                }
            }
            _ => out.push((at, json_type(v))),
        }
    }
    walk(kind, &d["spec"], "/spec".into(), &mut leaves);
    for (pointer, ty) in leaves {
        assert!(
            AGENT_SANDBOX_FIELDS.contains(&(kind, pointer.as_str(), ty)),
            "{name}: {kind} field {pointer} ({ty}) is not in the v1beta1 CRD table"
        );
    }
    if let Ok(dir) = std::env::var("AGENT_SANDBOX_CRDS") {
        validate_against_crd(Path::new(&dir), name, d);
    }
}

/// Validates `d` against its CRD's openAPIV3Schema (unknown fields refused) with the
/// venv's Python `jsonschema`.
fn validate_against_crd(dir: &Path, name: &str, d: &Value) {
    let venv = venv().expect("AGENT_SANDBOX_CRDS needs the venv");
    let plural = format!("{}s", d["kind"].as_str().unwrap().to_lowercase());
    let crd = dir.join(format!("extensions.agents.x-k8s.io_{plural}.yaml"));
    let script = r#"
import json, sys, yaml, jsonschema
crd = yaml.safe_load(open(sys.argv[1]))
schema = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"][0]["schema"]["openAPIV3Schema"]
def strict(n):
    if isinstance(n, dict):
        if "properties" in n and "additionalProperties" not in n and not n.get("x-kubernetes-preserve-unknown-fields"):
            n["additionalProperties"] = False
        for x in n.values(): strict(x)
    elif isinstance(n, list):
        for x in n: strict(x)
strict(schema)
errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(json.load(sys.stdin))]
print("\n".join(errors)); sys.exit(1 if errors else 0)
"#;
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .arg(&crd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(d.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name}: {} against {}:\n{}",
        d["kind"],
        crd.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The pod specs a policy renders to, for every kind (agent-sandbox's embedded one too).
fn pod_specs(docs: &[k8s::Document]) -> Vec<Value> {
    docs.iter()
        .filter_map(|d| match d.object["kind"].as_str() {
            Some("Pod") => Some(d.object["spec"].clone()),
            Some("Job") => Some(d.object["spec"]["template"]["spec"].clone()),
            Some("SandboxTemplate") => Some(d.object["spec"]["podTemplate"]["spec"].clone()),
            _ => None,
        })
        .collect()
}

/// Each control of the Pod Security Standards (baseline, then restricted), as a predicate
/// over a pod spec: (level: control, passes).
/// A rule's name (`level: control`) and its check.
type PssRule = (&'static str, fn(&Value) -> bool);

fn pss_rules() -> Vec<PssRule> {
    fn containers(p: &Value) -> Vec<&Value> {
        ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .flat_map(|k| p[*k].as_array().into_iter().flatten())
            .collect()
    }
    fn sc<'a>(c: &'a Value, field: &str) -> &'a Value {
        &c["securityContext"][field]
    }
    fn seccomp_ok(v: &Value) -> bool {
        matches!(v["type"].as_str(), Some("RuntimeDefault" | "Localhost"))
    }
    vec![
        ("baseline: Host Namespaces", |p| {
            ["hostNetwork", "hostPID", "hostIPC"]
                .iter()
                .all(|k| p[*k].as_bool() != Some(true))
        }),
        ("baseline: Privileged Containers", |p| {
            containers(p)
                .iter()
                .all(|c| sc(c, "privileged").as_bool() != Some(true))
        }),
        (
            "baseline: Capabilities (only the baseline set added)",
            |p| {
                const SET: &[&str] = &[
                    "AUDIT_WRITE",
                    "CHOWN",
                    "DAC_OVERRIDE",
                    "FOWNER",
                    "FSETID",
                    "KILL",
                    "MKNOD",
                    "NET_BIND_SERVICE",
                    "SETFCAP",
                    "SETGID",
                    "SETPCAP",
                    "SETUID",
                    "SYS_CHROOT",
                ];
                containers(p).iter().all(|c| {
                    sc(c, "capabilities")["add"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .all(|a| SET.contains(&a.as_str().unwrap_or("")))
                })
            },
        ),
        ("baseline: HostPath Volumes", |p| {
            p["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|v| v.get("hostPath").is_none())
        }),
        ("baseline: Host Ports", |p| {
            containers(p).iter().all(|c| {
                c["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|x| x.get("hostPort").is_none())
            })
        }),
        ("baseline: AppArmor (not Unconfined)", |p| {
            containers(p)
                .iter()
                .all(|c| sc(c, "appArmorProfile")["type"] != "Unconfined")
                && p["securityContext"]["appArmorProfile"]["type"] != "Unconfined"
        }),
        ("baseline: /proc Mount Type", |p| {
            containers(p).iter().all(|c| {
                let m = sc(c, "procMount");
                m.is_null() || m == "Default"
            })
        }),
        ("baseline: Sysctls (none outside the safe set)", |p| {
            p["securityContext"]["sysctls"]
                .as_array()
                .is_none_or(std::vec::Vec::is_empty)
        }),
        ("restricted: Volume Types", |p| {
            const OK: &[&str] = &[
                "configMap",
                "csi",
                "downwardAPI",
                "emptyDir",
                "ephemeral",
                "persistentVolumeClaim",
                "projected",
                "secret",
            ];
            p["volumes"].as_array().into_iter().flatten().all(|v| {
                v.as_object()
                    .unwrap()
                    .keys()
                    .all(|k| k == "name" || OK.contains(&k.as_str()))
            })
        }),
        ("restricted: Privilege Escalation", |p| {
            containers(p)
                .iter()
                .all(|c| sc(c, "allowPrivilegeEscalation").as_bool() == Some(false))
        }),
        ("restricted: Running as Non-root", |p| {
            let pod = p["securityContext"]["runAsNonRoot"].as_bool() == Some(true);
            containers(p)
                .iter()
                .all(|c| match sc(c, "runAsNonRoot").as_bool() {
                    Some(v) => v,
                    None => pod,
                })
        }),
        ("restricted: Running as Non-root user", |p| {
            p["securityContext"]["runAsUser"].as_u64() != Some(0)
                && containers(p)
                    .iter()
                    .all(|c| sc(c, "runAsUser").as_u64() != Some(0))
        }),
        ("restricted: Seccomp", |p| {
            let pod = seccomp_ok(&p["securityContext"]["seccompProfile"]);
            containers(p).iter().all(|c| {
                let own = sc(c, "seccompProfile");
                if own.is_null() {
                    pod
                } else {
                    seccomp_ok(own)
                }
            })
        }),
        (
            "restricted: Capabilities (drop ALL, add at most NET_BIND_SERVICE)",
            |p| {
                containers(p).iter().all(|c| {
                    let caps = sc(c, "capabilities");
                    caps["drop"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|x| x == "ALL"))
                        && caps["add"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .all(|a| a == "NET_BIND_SERVICE")
                })
            },
        ),
    ]
}

#[test]
fn the_rendered_pod_meets_every_restricted_pod_security_rule() {
    for (name, docs) in rendered() {
        for spec in pod_specs(&docs) {
            for (rule, passes) in pss_rules() {
                assert!(passes(&spec), "{name}: fails {rule}");
            }
        }
    }
}

#[test]
fn each_pod_security_rule_rejects_a_pod_that_breaks_it() {
    // One attack per rule, so a rule that accepts everything fails here.
    let docs = k8s::render(
        &policy(PolicyOverrides::default()),
        &Options::new(Kind::Pod),
    )
    .unwrap();
    let good = pod_specs(&docs).remove(0);
    let c = "/containers/0/securityContext";
    let attacks: Vec<(&str, Vec<(String, Value)>)> = vec![
        (
            "baseline: Host Namespaces",
            vec![("/hostPID".into(), json!(true))],
        ),
        (
            "baseline: Privileged Containers",
            vec![(format!("{c}/privileged"), json!(true))],
        ),
        (
            "baseline: Capabilities",
            vec![(format!("{c}/capabilities/add"), json!(["SYS_ADMIN"]))],
        ),
        (
            "baseline: HostPath Volumes",
            vec![(
                "/volumes/0".into(),
                json!({"name": "h", "hostPath": {"path": "/"}}),
            )],
        ),
        (
            "baseline: Host Ports",
            vec![(
                "/containers/0/ports".into(),
                json!([{"containerPort": 80, "hostPort": 80}]),
            )],
        ),
        (
            "baseline: AppArmor",
            vec![(
                format!("{c}/appArmorProfile"),
                json!({"type": "Unconfined"}),
            )],
        ),
        (
            "baseline: /proc Mount Type",
            vec![(format!("{c}/procMount"), json!("Unmasked"))],
        ),
        (
            "baseline: Sysctls",
            vec![(
                "/securityContext/sysctls".into(),
                json!([{"name": "kernel.msgmax", "value": "1"}]),
            )],
        ),
        (
            "restricted: Volume Types",
            vec![(
                "/volumes/0".into(),
                json!({"name": "n", "nfs": {"server": "x", "path": "/"}}),
            )],
        ),
        (
            "restricted: Privilege Escalation",
            vec![(format!("{c}/allowPrivilegeEscalation"), json!(true))],
        ),
        (
            "restricted: Running as Non-root",
            vec![(format!("{c}/runAsNonRoot"), json!(false))],
        ),
        (
            "restricted: Running as Non-root user",
            vec![(format!("{c}/runAsUser"), json!(0))],
        ),
        (
            "restricted: Seccomp",
            vec![(format!("{c}/seccompProfile"), json!({"type": "Unconfined"}))],
        ),
        (
            "restricted: Capabilities",
            vec![(format!("{c}/capabilities/add"), json!(["CHOWN"]))],
        ),
    ];
    let rules = pss_rules();
    assert_eq!(attacks.len(), rules.len(), "one attack per rule");
    for ((rule, passes), (name, edits)) in rules.iter().zip(attacks) {
        assert!(
            rule.starts_with(name),
            "attack {name} is out of order at {rule}"
        );
        let mut bad = good.clone();
        for (ptr, v) in edits {
            let (parent, key) = ptr.rsplit_once('/').unwrap();
            match bad.pointer_mut(parent).unwrap() {
                Value::Object(m) => {
                    m.insert(key.into(), v);
                }
                Value::Array(a) => a[key.parse::<usize>().unwrap()] = v,
                _ => panic!("{ptr}"),
            }
        }
        assert!(!passes(&bad), "{rule} accepted a pod that breaks it");
    }
}
