//! What the nodes need before a pod can start: the seccomp profile in the kubelet's seccomp
//! directory, the AppArmor profile loaded (a ConfigMap and a DaemonSet that installs both),
//! and the RuntimeClass that names the CRI handler and the pod overhead.

use serde_json::{json, Value};

use super::{
    seccomp_file_name, seccomp_profile_json, Document, Options, INSTALLER_NAMESPACE,
    POD_OVERHEAD_CPU, POD_OVERHEAD_MEMORY, SECCOMP_SUBDIR,
};
use crate::apparmor::{self, Params};
use crate::policy::{AppArmorChoice, ValidatedPolicy, DEFAULT_APPARMOR_PROFILE};

/// Where the installer sees the node's root filesystem.
const HOST_MOUNT: &str = "/host";
/// Where the installer sees the ConfigMap.
const PROFILES_MOUNT: &str = "/profiles";
/// Where the installer leaves the AppArmor profile on the node for `apparmor_parser`.
const NODE_APPARMOR_DIR: &str = "/var/lib/stockade/apparmor";

/// The AppArmor profile the installer loads, as (file name, text): the built-in profile for
/// the policy's network mode. A profile named by the policy is the node's to provide.
fn apparmor_profile(policy: &ValidatedPolicy) -> Option<(String, String)> {
    match &policy.apparmor {
        AppArmorChoice::Profile(name) if name == DEFAULT_APPARMOR_PROFILE => {
            let params = Params::default_for(policy.network);
            Some((params.name().to_string(), apparmor::render(&params)))
        }
        _ => None,
    }
}

/// The installer's shell script: copy the seccomp profiles into the kubelet's seccomp
/// directory, load the AppArmor profile where the node has AppArmor, then stay up so the
/// DaemonSet reports the node ready.
fn script(opts: &Options, apparmor_file: Option<&str>) -> String {
    let seccomp_dir = format!("{HOST_MOUNT}{}/seccomp/{SECCOMP_SUBDIR}", opts.kubelet_dir);
    let mut lines = vec![
        "set -eu".to_string(),
        format!("mkdir -p {seccomp_dir}"),
        format!("for f in {PROFILES_MOUNT}/*.json; do cp \"$f\" {seccomp_dir}/; done"),
    ];
    if let Some(file) = apparmor_file {
        lines.push(format!(
            "if [ -d {HOST_MOUNT}/sys/kernel/security/apparmor ]; then \
             mkdir -p {HOST_MOUNT}{NODE_APPARMOR_DIR} && \
             cp {PROFILES_MOUNT}/{file} {HOST_MOUNT}{NODE_APPARMOR_DIR}/{file} && \
             chroot {HOST_MOUNT} apparmor_parser --replace --write-cache {NODE_APPARMOR_DIR}/{file}; \
             else echo 'no AppArmor on this node: profile not loaded'; fi"
        ));
    }
    lines.push("exec sleep 2147483647".into());
    lines.join("\n") + "\n"
}

/// The ConfigMap with the profiles and the DaemonSet that installs them on every node.
pub(super) fn installer(policy: &ValidatedPolicy, opts: &Options) -> Vec<Document> {
    let name = format!("{}-profiles", opts.name);
    let labels = json!({
        "app.kubernetes.io/name": "stockade-profiles",
        "app.kubernetes.io/instance": name,
    });
    let mut data = serde_json::Map::new();
    let seccomp = seccomp_profile_json(policy);
    if let Some(json) = &seccomp {
        data.insert(seccomp_file_name(json), json!(json));
    }
    let apparmor = apparmor_profile(policy);
    if let Some((file, text)) = &apparmor {
        data.insert(file.clone(), json!(text));
    }
    let mut comments = vec![format!(
        "node profiles: the seccomp profile goes to {}/seccomp/{SECCOMP_SUBDIR}/ (the pod names it as a \
         path relative to {}/seccomp)",
        opts.kubelet_dir, opts.kubelet_dir
    )];
    match (&policy.apparmor, &apparmor) {
        (_, Some((file, _))) => comments.push(format!(
            "the AppArmor profile {file} is loaded with the node's apparmor_parser where the node has AppArmor"
        )),
        (AppArmorChoice::Profile(n), None) => comments.push(format!(
            "the AppArmor profile {n} is not stockade's: load it on the nodes yourself"
        )),
        (AppArmorChoice::Unconfined, None) => {}
    }
    let config_map = Document {
        comments,
        object: json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": INSTALLER_NAMESPACE, "labels": labels},
            "data": data,
        }),
    };
    let container = json!({
        "name": "install",
        "image": opts.installer_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", script(opts, apparmor.as_ref().map(|(f, _)| f.as_str()))],
        // Writing into the kubelet's directory and loading a kernel profile need the host:
        // this is a node agent, not a sandbox.
        "securityContext": {"privileged": true},
        "resources": {
            "requests": {"cpu": "1m", "memory": "8Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "volumeMounts": [
            {"name": "host", "mountPath": HOST_MOUNT},
            {"name": "profiles", "mountPath": PROFILES_MOUNT, "readOnly": true},
        ],
    });
    let daemon_set = Document {
        comments: vec![
            "installs the profiles above on every node; privileged by necessity (it writes the kubelet's \
             directory and loads kernel profiles), so it runs in kube-system, not beside the sandboxes"
                .into(),
        ],
        object: json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": INSTALLER_NAMESPACE, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "containers": [container],
                        "volumes": [
                            {"name": "host", "hostPath": {"path": "/", "type": "Directory"}},
                            {"name": "profiles", "configMap": {"name": name}},
                        ],
                    },
                },
            },
        }),
    };
    vec![config_map, daemon_set]
}

/// The RuntimeClass: pods name it, the node's CRI runs them with its handler.
pub(super) fn runtime_class(opts: &Options) -> Document {
    let object: Value = json!({
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": opts.runtime_class},
        "handler": opts.handler,
        "overhead": {"podFixed": {"memory": POD_OVERHEAD_MEMORY, "cpu": POD_OVERHEAD_CPU}},
    });
    Document {
        comments: vec![format!(
            "runtime handler {}: the name the node's containerd CRI config gives runc; the overhead is the \
             shim's and pause container's share, added to each pod's requests",
            opts.handler
        )],
        object,
    }
}
