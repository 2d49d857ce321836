//! The pod: its spec (security context, resources, volumes), the workload object around it
//! (Pod or Job), its NetworkPolicy, and what of the policy Kubernetes cannot express.

use serde_json::{json, Map, Value};

use super::{bytes_quantity, cpu_quantity, seccomp_localhost_path, Document, Kind, Options};
use crate::policy::{AppArmorChoice, NetworkMode, ValidatedPolicy};
use crate::spec::apparmor_profile_name;

/// The name of the pod's one container.
pub const CONTAINER_NAME: &str = "sandbox";

/// The labels every workload object carries; the NetworkPolicy selects on them.
pub(super) fn labels(opts: &Options) -> Value {
    json!({
        "app.kubernetes.io/name": "stockade",
        "app.kubernetes.io/instance": opts.name,
    })
}

/// The paths the kubelet masks for `procMount: Default` (Kubernetes' `DefaultMaskedPaths`,
/// 1.31 and later: containerd's defaults and the powercap counters); a pod can mask no
/// other.
pub const KUBERNETES_MASKED_PATHS: &[&str] = &{
    let mut all = [crate::spec::POWERCAP_PATH; 11];
    let mut i = 0;
    while i < crate::spec::CONTAINERD_MASKED_PATHS.len() {
        all[i] = crate::spec::CONTAINERD_MASKED_PATHS[i];
        i += 1;
    }
    all
};

/// What stockade masks and a pod cannot: the spec's masked paths beyond
/// [`KUBERNETES_MASKED_PATHS`], the per-CPU ones as one pattern (`*` for the CPU number).
pub fn masked_beyond_kubernetes() -> Vec<String> {
    let mut v: Vec<String> = crate::spec::masked_paths(0)
        .into_iter()
        .filter(|p| !KUBERNETES_MASKED_PATHS.contains(&p.as_str()))
        .collect();
    v.extend(
        crate::spec::masked_paths(1)
            .into_iter()
            .filter(|p| p.contains("/cpu0/"))
            .map(|p| p.replace("/cpu0/", "/cpu*/")),
    );
    v
}

/// A limit of the policy that no pod field carries: its annotation key, value and the
/// reason Kubernetes cannot say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpressed {
    pub annotation: &'static str,
    pub value: String,
    pub why: &'static str,
}

/// What of the policy no pod field carries, in a fixed order. Each becomes an
/// `org.stockade.*` annotation on the pod (a record for auditors and admission policies,
/// not an enforcement) and a comment line above the workload.
pub fn unexpressed(policy: &ValidatedPolicy) -> Vec<Unexpressed> {
    let l = &policy.limits;
    let mut v = vec![
        Unexpressed {
            annotation: "org.stockade.limits.pids",
            value: l.pids.to_string(),
            why: "a pod has no pids limit field; the kubelet's podPidsLimit \
                  (KubeletConfiguration) is one value for every pod of a node, so set it \
                  there at most this high",
        },
        Unexpressed {
            annotation: "org.stockade.limits.nofile",
            value: l.nofile.to_string(),
            why: "rlimits are not in the pod API; the container gets the runtime's default \
                  RLIMIT_NOFILE (containerd's CRI: its own, usually 1048576 hard)",
        },
        Unexpressed {
            annotation: "org.stockade.limits.fsize",
            value: l.fsize.to_string(),
            why: "RLIMIT_FSIZE is not in the pod API; the ephemeral-storage limit bounds \
                  what the pod writes instead (the kubelet evicts the pod beyond it)",
        },
        Unexpressed {
            annotation: "org.stockade.limits.oom-score-adj",
            value: l.oom_score_adj.to_string(),
            why: "the kubelet sets oom_score_adj from the QoS class: requests equal to \
                  limits make the pod Guaranteed (-997), so the node's OOM killer picks it \
                  after best-effort pods",
        },
        Unexpressed {
            annotation: "org.stockade.limits.max-output",
            value: l.max_output.to_string(),
            why: "container logs are not capped per stream; the kubelet rotates them \
                  (containerLogMaxSize)",
        },
    ];
    if policy.uid_per_sandbox {
        v.push(Unexpressed {
            annotation: "org.stockade.user",
            value: format!("{}:{}", policy.user.uid, policy.user.gid),
            why: "stockade gives each sandbox a host UID of its own; every pod of this \
                  object runs as this fixed non-root UID instead (a pod with \
                  hostUsers: false, Kubernetes 1.33+ on a runtime with user namespaces, \
                  gets a host ID range of its own, the nearest equivalent)",
        });
    }
    v.push(Unexpressed {
        annotation: "org.stockade.masked-paths",
        value: masked_beyond_kubernetes().join(","),
        why: "the kubelet sends the CRI only Kubernetes' default masked paths \
              (procMount: Default), which the runtime applies in place of its own, and the \
              pod API cannot add one: the pod can read these",
    });
    if policy.user.uid != 0 && !policy.cap_add.is_empty() {
        let caps: Vec<String> = policy.cap_add.iter().map(ToString::to_string).collect();
        v.push(Unexpressed {
            annotation: "org.stockade.capabilities.ambient",
            value: caps.join(","),
            why: "stockade grants the added capabilities to its non-root user as ambient \
                  capabilities; the pod API has none, so `capabilities.add` only keeps them \
                  in the bounding set and a non-root process holds them in no effective \
                  set (a file capability, setcap on the program in the image, is the \
                  nearest equivalent)",
        });
    }
    if let Some(w) = l.io_weight {
        v.push(Unexpressed {
            annotation: "org.stockade.limits.io-weight",
            value: w.to_string(),
            why: "the pod API has no block-I/O weight",
        });
    }
    v
}

fn seccomp_profile(policy: &ValidatedPolicy) -> Value {
    match seccomp_localhost_path(policy) {
        Some(path) => json!({"type": "Localhost", "localhostProfile": path}),
        None => json!({"type": "Unconfined"}),
    }
}

fn apparmor_profile(policy: &ValidatedPolicy) -> Value {
    match &policy.apparmor {
        AppArmorChoice::Profile(name) => json!({
            "type": "Localhost",
            "localhostProfile": apparmor_profile_name(name, policy),
        }),
        AppArmorChoice::Unconfined => json!({"type": "Unconfined"}),
    }
}

/// The container's `securityContext`.
fn container_security(policy: &ValidatedPolicy) -> Value {
    // Kubernetes spells capabilities without the CAP_ prefix.
    let add: Vec<String> = policy
        .cap_add
        .iter()
        .map(|c| c.to_string().trim_start_matches("CAP_").to_string())
        .collect();
    let mut caps = Map::new();
    caps.insert("drop".into(), json!(["ALL"]));
    if !add.is_empty() {
        caps.insert("add".into(), json!(add));
    }
    json!({
        "runAsUser": policy.user.uid,
        "runAsGroup": policy.user.gid,
        "runAsNonRoot": policy.user.uid != 0,
        "allowPrivilegeEscalation": !policy.no_new_privileges,
        "privileged": false,
        "capabilities": caps,
        "readOnlyRootFilesystem": policy.read_only_root,
        "procMount": "Default",
        "seccompProfile": seccomp_profile(policy),
        "appArmorProfile": apparmor_profile(policy),
    })
}

/// The pod spec for `policy`. `deadline` sets `activeDeadlineSeconds` from the timeout
/// (not for pods a warm pool keeps waiting for a claim).
pub fn pod_spec(policy: &ValidatedPolicy, opts: &Options, deadline: bool) -> Value {
    let l = &policy.limits;
    let quantities = json!({
        "memory": bytes_quantity(l.memory),
        "cpu": cpu_quantity(l.cpu_millis),
        "ephemeral-storage": bytes_quantity(l.disk),
    });
    let env: Vec<Value> = policy
        .env
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            json!({"name": k, "value": v})
        })
        .collect();
    let mut mounts = vec![
        json!({"name": "tmp", "mountPath": "/tmp"}),
        json!({"name": "dshm", "mountPath": "/dev/shm"}),
    ];
    let mut volumes = vec![
        json!({"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": bytes_quantity(l.tmp_size)}}),
        json!({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": bytes_quantity(l.shm_size)}}),
    ];
    if let Some(size) = policy.managed_workspace {
        mounts.push(json!({"name": "workspace", "mountPath": crate::spec::WORKSPACE_PATH}));
        volumes.push(json!({"name": "workspace", "emptyDir": {"sizeLimit": bytes_quantity(size)}}));
    }
    let mut container = json!({
        "name": CONTAINER_NAME,
        "image": policy.image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "workingDir": policy.cwd,
        "securityContext": container_security(policy),
        "resources": {"limits": quantities.clone(), "requests": quantities},
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if !opts.command.is_empty() {
        container["command"] = json!(opts.command);
    }
    let pod_security = json!({
        "runAsUser": policy.user.uid,
        "runAsGroup": policy.user.gid,
        "runAsNonRoot": policy.user.uid != 0,
        "seccompProfile": seccomp_profile(policy),
    });
    let mut spec = json!({
        "runtimeClassName": opts.runtime_class,
        "restartPolicy": "Never",
        "hostname": policy.hostname,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "hostNetwork": false,
        "hostPID": false,
        "hostIPC": false,
        "shareProcessNamespace": false,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
    });
    if policy.user_namespace.is_some() {
        // The pod's own user namespace; the kubelet picks its host ID range.
        spec["hostUsers"] = json!(false);
    }
    if deadline {
        spec["activeDeadlineSeconds"] = json!(l.timeout.as_secs().max(1));
    }
    spec
}

/// The pod's annotations: the policy hash and every [`unexpressed`] value.
pub(super) fn annotations(policy: &ValidatedPolicy) -> Value {
    let mut a = Map::new();
    a.insert(
        crate::spec::ANNOTATION_POLICY_HASH.into(),
        json!(policy.hash()),
    );
    for u in unexpressed(policy) {
        a.insert(u.annotation.into(), json!(u.value));
    }
    Value::Object(a)
}

/// The comment lines above a workload: one per [`unexpressed`] value.
pub(super) fn comments(policy: &ValidatedPolicy, deadline: bool) -> Vec<String> {
    let mut c = vec![format!(
        "stockade policy {}; not expressible in Kubernetes (recorded as annotations):",
        policy.hash()
    )];
    for u in unexpressed(policy) {
        c.push(format!(
            "  {} = {}: {}",
            u.annotation,
            u.value,
            squash(u.why)
        ));
    }
    if !deadline {
        c.push(format!(
            "  timeout {}s: no activeDeadlineSeconds (warm pods wait for a claim); set the \
             SandboxClaim's lifecycle.shutdownTime instead",
            policy.limits.timeout.as_secs()
        ));
    }
    c
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The Pod or Job.
pub(super) fn workload(policy: &ValidatedPolicy, opts: &Options) -> Document {
    let metadata = json!({
        "name": opts.name,
        "namespace": opts.namespace,
        "labels": labels(opts),
        "annotations": annotations(policy),
    });
    let object = if opts.kind == Kind::Job {
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": opts.name, "namespace": opts.namespace, "labels": labels(opts)},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": policy.limits.timeout.as_secs().max(1),
                "template": {
                    "metadata": {"labels": labels(opts), "annotations": annotations(policy)},
                    "spec": pod_spec(policy, opts, true),
                },
            },
        })
    } else {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": pod_spec(policy, opts, true),
        })
    };
    Document {
        comments: comments(policy, true),
        object,
    }
}

/// The NetworkPolicy for the network mode. `none` and `loopback` both deny every ingress
/// and egress: the pod's own loopback needs no rule, and under `none` the seccomp profile
/// also refuses every socket but `AF_UNIX`. `egress` allows IPv4 out to everywhere but
/// [`crate::network::ALWAYS_DENIED`], plus the ranges the policy opens (`network.allow`);
/// ingress stays denied. What stockade adds on one host and a NetworkPolicy cannot say —
/// the node's own addresses denied whatever their range — is said in the comment.
pub(super) fn network_policy(policy: &ValidatedPolicy, opts: &Options) -> Document {
    let (mode, egress, note) = match policy.network {
        NetworkMode::None => ("none", json!([]), "no ingress, no egress"),
        NetworkMode::Loopback => ("loopback", json!([]), "no ingress, no egress"),
        // A group network is one host's; on a cluster its members are not known here, so
        // the pod gets nothing rather than more.
        NetworkMode::Group => (
            "group",
            json!([]),
            "no ingress, no egress (a group network is not rendered for a cluster)",
        ),
        NetworkMode::Egress => {
            let except: Vec<String> = crate::network::ALWAYS_DENIED
                .iter()
                .map(|(c, _)| c.to_string())
                .collect();
            let mut rules =
                vec![json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": except}}]})];
            for c in &policy.network_rules.allow {
                rules.push(json!({"to": [{"ipBlock": {"cidr": c.to_string()}}]}));
            }
            (
                "egress",
                Value::Array(rules),
                "no ingress; IPv4 egress except the private, link-local (metadata), loopback, \
                 shared and multicast ranges unless the policy opens them; the node's own \
                 public addresses cannot be named here, as stockade denies them on one host",
            )
        }
        NetworkMode::Allowlist => {
            let mut rules = Vec::new();
            for e in &policy.network_rules.entries {
                let crate::network::Dest::Range(c) = &e.dest else {
                    continue;
                };
                let ports = match e.ports {
                    Some(p) if p.first == p.last => json!([
                        {"protocol": "TCP", "port": p.first},
                        {"protocol": "UDP", "port": p.first}
                    ]),
                    Some(p) => json!([
                        {"protocol": "TCP", "port": p.first, "endPort": p.last},
                        {"protocol": "UDP", "port": p.first, "endPort": p.last}
                    ]),
                    None => json!([{"protocol": "TCP"}, {"protocol": "UDP"}]),
                };
                rules.push(json!({"to": [{"ipBlock": {"cidr": c.to_string()}}], "ports": ports}));
            }
            (
                "allowlist",
                Value::Array(rules),
                "no ingress; IPv4 egress only to the policy's ranges; its host-name entries \
                 cannot be said in a NetworkPolicy (stockade resolves them through a DNS \
                 forwarder of its own) and are left out",
            )
        }
    };
    Document {
        comments: vec![format!(
            "network {mode}: {note} (enforced only where the CNI plugin implements \
             NetworkPolicy)"
        )],
        object: json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": opts.name, "namespace": opts.namespace, "labels": labels(opts)},
            "spec": {
                "podSelector": {"matchLabels": labels(opts)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": egress,
            },
        }),
    }
}
