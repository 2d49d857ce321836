//! Kubernetes manifests: the same rules, judged on the pod spec of a Pod, Job, CronJob,
//! Deployment, StatefulSet, DaemonSet, ReplicaSet or agent-sandbox SandboxTemplate, with
//! pointers into the manifest. Each securityContext field maps onto the rule that judges
//! the OCI field a kubelet derives from it: `privileged: true` is every capability
//! (STK-CAP-001), `hostPID` the host's PID namespace (STK-NS-001), a missing or
//! `Unconfined` seccomp profile no seccomp (STK-SEC-001), and so on. Pure, like the rest of
//! the audit. Volume types outside the restricted set other than `hostPath` are not judged.

use serde_json::Value;

use super::checks::kernel::PSS_SAFE_SYSCTLS;
use super::checks::mounts::mount_at;
use super::checks::{cap_rule, esc, normalize_cap, Out};
use super::model::MountView;
use super::{AuditError, Report};

/// One workload of a manifest and its findings.
#[derive(Debug, Clone)]
pub struct ManifestReport {
    /// `Kind/name`, e.g. `Pod/web`.
    pub object: String,
    /// The findings of the workload's rendered spec.
    pub report: Report,
}

/// Where each kind keeps its pod spec.
const POD_SPEC_AT: &[(&str, &str)] = &[
    ("Pod", "/spec"),
    ("Job", "/spec/template/spec"),
    ("Deployment", "/spec/template/spec"),
    ("StatefulSet", "/spec/template/spec"),
    ("DaemonSet", "/spec/template/spec"),
    ("ReplicaSet", "/spec/template/spec"),
    ("CronJob", "/spec/jobTemplate/spec/template/spec"),
    ("SandboxTemplate", "/spec/podTemplate/spec"),
    ("Sandbox", "/spec/podTemplate/spec"),
];

/// Reads YAML (or JSON) documents; `None` when `text` is not a Kubernetes manifest (its
/// first document has no `apiVersion` and `kind`, or it is an OCI spec).
fn documents(text: &str) -> Option<Result<Vec<Value>, AuditError>> {
    let mut docs = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(text) {
        match serde::Deserialize::deserialize(d) {
            Ok(Value::Null) => continue,
            Ok(v) => docs.push(v),
            Err(e) if docs.is_empty() => {
                let _ = e;
                return None;
            }
            Err(e) => return Some(Err(AuditError::NotASpec(format!("YAML: {e}")))),
        }
    }
    let first = docs.first()?;
    if first.get("ociVersion").is_some()
        || !first["apiVersion"].is_string()
        || !first["kind"].is_string()
    {
        return None;
    }
    Some(Ok(docs))
}

/// Whether `text` reads as a Kubernetes manifest rather than an OCI spec.
pub fn is_manifest(text: &str) -> bool {
    documents(text).is_some()
}

/// Audits every workload of a manifest (other kinds, such as ConfigMap or NetworkPolicy,
/// are passed over). An error when it holds none.
pub fn audit_manifest(text: &str) -> Result<Vec<ManifestReport>, AuditError> {
    let docs = documents(text).unwrap_or_else(|| {
        Err(AuditError::NotASpec(
            "not a Kubernetes manifest (no apiVersion and kind)".into(),
        ))
    })?;
    let mut out = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let kind = d["kind"].as_str().unwrap_or_default();
        let Some((_, at)) = POD_SPEC_AT.iter().find(|(k, _)| *k == kind) else {
            continue;
        };
        let Some(spec) = d.pointer(at).filter(|s| s.is_object()) else {
            return Err(AuditError::NotASpec(format!(
                "document {}: {kind} has no pod spec at {at}",
                i + 1
            )));
        };
        // The pod's own metadata sits beside its spec.
        let meta_at = format!("{}/metadata", &at[..at.len() - "/spec".len()]);
        let annotations = d
            .pointer(&format!("{meta_at}/annotations"))
            .unwrap_or(&Value::Null);
        let mut o = Out(Vec::new());
        pod(spec, at, &meta_at, annotations, &mut o);
        out.push(ManifestReport {
            object: format!("{kind}/{}", d["metadata"]["name"].as_str().unwrap_or("?")),
            report: Report::new(o.0),
        });
    }
    if out.is_empty() {
        return Err(AuditError::NotASpec(format!(
            "no workload in the manifest (expected one of {})",
            POD_SPEC_AT
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(out)
}

fn pod(p: &Value, at: &str, meta_at: &str, annotations: &Value, out: &mut Out) {
    for (field, rule, ns) in [
        ("hostPID", "STK-NS-001", "pid"),
        ("hostNetwork", "STK-NS-002", "network"),
        ("hostIPC", "STK-NS-003", "ipc"),
    ] {
        if p[field].as_bool() == Some(true) {
            out.add_about(rule, format!("{at}/{field}"), ns, format!("{field}: true"));
        }
    }
    for (i, v) in p["volumes"].as_array().into_iter().flatten().enumerate() {
        let Some(path) = v["hostPath"]["path"].as_str() else {
            continue;
        };
        let name = v["name"].as_str().unwrap_or("?");
        // Read-only only where every container mounts it read-only.
        let read_only = containers(p, at).iter().all(|(_, c)| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["name"] == name)
                .all(|m| m["readOnly"].as_bool() == Some(true))
        });
        let m = MountView {
            destination: Some(format!("volume {name}")),
            typ: Some("bind".into()),
            source: Some(path.into()),
            options: Some(vec![if read_only { "ro" } else { "rw" }.into()]),
        };
        let mut found = Out(Vec::new());
        mount_at("", &m, &mut found);
        for mut f in found.0 {
            f.pointer = format!("{at}/volumes/{i}/hostPath/path");
            out.0.push(f);
        }
    }
    for (i, s) in p["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = s["name"].as_str().unwrap_or_default();
        if !PSS_SAFE_SYSCTLS.contains(&name) {
            out.add_about(
                "STK-SYS-002",
                format!("{at}/securityContext/sysctls/{i}"),
                name,
                format!("sysctl {name} is outside the Kubernetes safe set"),
            );
        }
    }
    for (base, c) in containers(p, at) {
        container(p, (at, meta_at), &base, c, annotations, out);
    }
}

fn containers<'a>(p: &'a Value, at: &str) -> Vec<(String, &'a Value)> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| {
            p[*k]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(move |(i, c)| (format!("{at}/{k}/{i}"), c))
        })
        .collect()
}

/// The container's own value of a securityContext field, else the pod's, with its pointer.
fn effective<'a>(
    p: &'a Value,
    at: &str,
    base: &str,
    c: &'a Value,
    field: &str,
) -> (Option<&'a Value>, String) {
    if let Some(v) = c["securityContext"].get(field) {
        return (Some(v), format!("{base}/securityContext/{field}"));
    }
    if let Some(v) = p["securityContext"].get(field) {
        return (Some(v), format!("{at}/securityContext/{field}"));
    }
    (None, format!("{base}/securityContext"))
}

fn container(
    p: &Value,
    (at, meta_at): (&str, &str),
    base: &str,
    c: &Value,
    annotations: &Value,
    out: &mut Out,
) {
    let name = c["name"].as_str().unwrap_or("?");
    let sc = &c["securityContext"];
    let scp = format!("{base}/securityContext");
    if sc["privileged"].as_bool() == Some(true) {
        out.add_about(
            "STK-CAP-001",
            format!("{scp}/privileged"),
            "privileged",
            format!("container {name} is privileged: every capability, every device, no seccomp or AppArmor"),
        );
    }
    for (i, cap) in sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let cap = normalize_cap(cap.as_str().unwrap_or_default());
        if let Some(id) = cap_rule(&cap) {
            out.add_about(
                id,
                format!("{scp}/capabilities/add/{i}"),
                &cap,
                format!("container {name} adds {cap}"),
            );
        }
    }
    let drops_all = sc["capabilities"]["drop"].as_array().is_some_and(|d| {
        d.iter()
            .any(|x| x.as_str().is_some_and(|s| s.eq_ignore_ascii_case("ALL")))
    });
    if !drops_all {
        out.add_about(
            "STK-CAP-004",
            format!("{scp}/capabilities/drop"),
            "drop ALL",
            format!(
                "container {name} does not drop ALL: the runtime's default capabilities remain"
            ),
        );
    }
    if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
        out.add(
            "STK-PROC-001",
            format!("{scp}/allowPrivilegeEscalation"),
            format!("container {name}: allowPrivilegeEscalation is not false"),
        );
    }
    let (seccomp, ptr) = effective(p, at, base, c, "seccompProfile");
    match seccomp.and_then(|s| s["type"].as_str()) {
        Some("RuntimeDefault" | "Localhost") => {}
        other => out.add(
            "STK-SEC-001",
            ptr,
            format!(
                "container {name}: seccomp profile {}",
                other.map_or("missing".to_string(), |t| format!("type {t}"))
            ),
        ),
    }
    let (apparmor, ptr) = effective(p, at, base, c, "appArmorProfile");
    let annotation = format!("container.apparmor.security.beta.kubernetes.io/{name}");
    if apparmor.is_some_and(|a| a["type"] == "Unconfined") {
        out.add(
            "STK-MAC-002",
            ptr,
            format!("container {name}: AppArmor Unconfined"),
        );
    } else if annotations[&annotation] == "unconfined" {
        out.add(
            "STK-MAC-002",
            format!("{meta_at}/annotations/{}", esc(&annotation)),
            format!("container {name}: AppArmor unconfined (annotation)"),
        );
    }
    let (non_root, _) = effective(p, at, base, c, "runAsNonRoot");
    let (user, user_ptr) = effective(p, at, base, c, "runAsUser");
    let uid = user.and_then(Value::as_u64);
    if uid == Some(0) || (uid.is_none() && non_root.and_then(Value::as_bool) != Some(true)) {
        out.add(
            "STK-PROC-002",
            user_ptr,
            format!(
                "container {name} may run as root ({})",
                if uid == Some(0) {
                    "runAsUser: 0"
                } else {
                    "no runAsUser, runAsNonRoot not true"
                }
            ),
        );
    }
    if sc["readOnlyRootFilesystem"].as_bool() != Some(true) {
        out.add(
            "STK-FS-001",
            format!("{scp}/readOnlyRootFilesystem"),
            format!("container {name}: readOnlyRootFilesystem is not true"),
        );
    }
    if sc["procMount"] == "Unmasked" {
        out.add(
            "STK-FS-006",
            format!("{scp}/procMount"),
            format!("container {name}: procMount Unmasked"),
        );
    }
    for (res, rule) in [("memory", "STK-RES-001"), ("cpu", "STK-RES-002")] {
        if c["resources"]["limits"].get(res).is_none() {
            out.add(
                rule,
                format!("{base}/resources/limits"),
                format!("container {name} has no {res} limit"),
            );
        }
    }
}

/// Every workload of a manifest in one report, each message prefixed with its `Kind/name`.
pub fn audit_manifest_merged(text: &str) -> Result<Report, AuditError> {
    let mut findings = Vec::new();
    for m in audit_manifest(text)? {
        for mut f in m.report.findings {
            f.message = format!("{}: {}", m.object, f.message);
            findings.push(f);
        }
    }
    Ok(Report::new(findings))
}
