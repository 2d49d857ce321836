//! [`ValidatedPolicy`] → Kubernetes objects: the same confinement as a `stockade run`,
//! rendered as a Pod (or Job, or an agent-sandbox `SandboxTemplate` / `SandboxWarmPool`),
//! its NetworkPolicy, a RuntimeClass, and a node installer (ConfigMap + DaemonSet) that puts
//! the seccomp profile in the kubelet's seccomp directory and loads the AppArmor profile.
//!
//! Pure: [`render`] takes data and returns [`Document`]s (JSON values); [`to_yaml`] prints
//! them as one multi-document YAML stream. What Kubernetes cannot express of the policy is
//! said in each document's comment lines and, where a value belongs to the pod, in an
//! `org.stockade.*` annotation (see [`unexpressed`]).

mod node;
mod pod;
mod sandbox;

use serde_json::Value;
use thiserror::Error;

use crate::policy::{SeccompChoice, ValidatedPolicy};

pub use pod::{
    masked_beyond_kubernetes, pod_spec, unexpressed, CONTAINER_NAME, KUBERNETES_MASKED_PATHS,
};

/// Default object name (`--name`).
pub const DEFAULT_NAME: &str = "stockade-sandbox";
/// Default namespace of the workload (`--namespace`).
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default RuntimeClass name (`--runtime-class`).
pub const DEFAULT_RUNTIME_CLASS: &str = "stockade";
/// Default CRI runtime handler of the RuntimeClass (`--runtime-handler`): the name
/// containerd's CRI plugin gives its runc runtime.
pub const DEFAULT_HANDLER: &str = "runc";
/// Default kubelet root directory (`--kubelet-dir`); seccomp profiles live in its
/// `seccomp/` subdirectory.
pub const DEFAULT_KUBELET_DIR: &str = "/var/lib/kubelet";
/// Default image of the node installer (`--installer-image`): it needs only a POSIX shell,
/// `mkdir`, `cp`, `chroot` and `sleep`.
pub const DEFAULT_INSTALLER_IMAGE: &str = "busybox";
/// Namespace of the node installer: node agents belong with the cluster's own.
pub const INSTALLER_NAMESPACE: &str = "kube-system";
/// Default warm-pool size (`--replicas`).
pub const DEFAULT_REPLICAS: u32 = 2;
/// The subdirectory of the kubelet's seccomp directory that holds stockade's profiles;
/// `localhostProfile` paths are relative to the seccomp directory.
pub const SECCOMP_SUBDIR: &str = "stockade";
/// The fixed per-pod overhead the RuntimeClass declares: the containerd shim and the pause
/// container of each pod, which the scheduler adds to the pod's requests.
pub const POD_OVERHEAD_MEMORY: &str = "32Mi";
/// See [`POD_OVERHEAD_MEMORY`].
pub const POD_OVERHEAD_CPU: &str = "10m";
/// The agent-sandbox extensions API group and the version its CRDs serve and store.
pub const AGENT_SANDBOX_API: &str = "extensions.agents.x-k8s.io/v1beta1";

/// What to render around the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A bare Pod.
    Pod,
    /// A batch Job running the pod once.
    Job,
    /// An agent-sandbox `SandboxTemplate`.
    SandboxTemplate,
    /// An agent-sandbox `SandboxWarmPool` of the template.
    WarmPool,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "pod" => Ok(Kind::Pod),
            "job" => Ok(Kind::Job),
            "sandbox-template" => Ok(Kind::SandboxTemplate),
            "warm-pool" => Ok(Kind::WarmPool),
            _ => Err(format!(
                "unknown kind `{s}` (expected pod, job, sandbox-template or warm-pool)"
            )),
        }
    }
}

/// Everything besides the policy that the objects need. [`Options::new`] gives the
/// documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The objects' name.
    pub name: String,
    /// Their Kubernetes namespace.
    pub namespace: String,
    /// The RuntimeClass the pod names.
    pub runtime_class: String,
    /// The runtime handler that RuntimeClass maps to (containerd's runtime name).
    pub handler: String,
    /// What to render.
    pub kind: Kind,
    /// The command, or empty for the image's own.
    pub command: Vec<String>,
    /// The kubelet's root directory on the nodes (the installer's seccomp profile path is under it).
    pub kubelet_dir: String,
    /// The image of the node installer DaemonSet.
    pub installer_image: String,
    /// Members of a warm pool.
    pub replicas: u32,
}

impl Options {
    /// Options with every default ([`DEFAULT_NAME`], …) for `kind`.
    pub fn new(kind: Kind) -> Options {
        Options {
            name: DEFAULT_NAME.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            runtime_class: DEFAULT_RUNTIME_CLASS.into(),
            handler: DEFAULT_HANDLER.into(),
            kind,
            command: Vec::new(),
            kubelet_dir: DEFAULT_KUBELET_DIR.into(),
            installer_image: DEFAULT_INSTALLER_IMAGE.into(),
            replicas: DEFAULT_REPLICAS,
        }
    }
}

/// Why the policy cannot be rendered for Kubernetes.
#[derive(Debug, Error)]
pub enum K8sError {
    #[error(
        "{field}: a host directory cannot be mounted into a pod (hostPath volumes break the \
         restricted Pod Security Standard); use --workspace-size for a workspace of its own"
    )]
    /// The policy names a host directory; pods cannot mount one safely.
    HostDirectory {
        /// The policy field.
        field: &'static str,
    },
    /// A flag's value is not a Kubernetes name.
    #[error("{flag}: `{value}` is not a Kubernetes name (lowercase letters, digits and `-`, at most {max} characters, starting and ending with a letter or digit)")]
    BadName {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// The longest name allowed.
        max: usize,
    },
    /// `--replicas 0`.
    #[error("--replicas: must be at least 1")]
    NoReplicas,
}

/// One rendered object and the comment lines printed above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Lines printed as `#` comments above the object.
    pub comments: Vec<String>,
    /// The object, as JSON.
    pub object: Value,
}

/// The seccomp profile a pod of this policy runs under, exactly as the node installer
/// writes it: the spec's filter for the policy's network mode, as pretty JSON in the OCI
/// `LinuxSeccomp` form containerd's CRI plugin reads. `None` for `unconfined`.
pub fn seccomp_profile_json(policy: &ValidatedPolicy) -> Option<String> {
    let SeccompChoice::Profile { filter, .. } = &policy.seccomp else {
        return None;
    };
    let filter = crate::spec::seccomp_for_network(filter, policy.network)
        .expect("adapting a validated filter to its network mode always builds");
    Some(serde_json::to_string_pretty(&filter).expect("a seccomp filter serializes") + "\n")
}

/// The file name of the profile under `<kubelet dir>/seccomp/stockade/`: the first 16 hex
/// digits of the SHA-256 of its text, so two different profiles never share a name and a
/// running pod's profile is never rewritten under it.
pub fn seccomp_file_name(profile_json: &str) -> String {
    format!("{}.json", &crate::digest::sha256_hex(profile_json)[..16])
}

/// The pod's `localhostProfile`: relative to the kubelet's seccomp directory.
pub fn seccomp_localhost_path(policy: &ValidatedPolicy) -> Option<String> {
    seccomp_profile_json(policy).map(|j| format!("{SECCOMP_SUBDIR}/{}", seccomp_file_name(&j)))
}

fn check_name(flag: &'static str, value: &str, max: usize) -> Result<(), K8sError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(K8sError::BadName {
            flag,
            value: value.into(),
            max,
        })
    }
}

/// Renders every object for `policy`: the node installer (ConfigMap, DaemonSet), the
/// RuntimeClass, then the workload (`Pod` + `NetworkPolicy`, `Job` + `NetworkPolicy`,
/// `SandboxTemplate`, or `SandboxTemplate` + `SandboxWarmPool`; agent-sandbox manages the
/// NetworkPolicy of its sandboxes from the template).
pub fn render(policy: &ValidatedPolicy, opts: &Options) -> Result<Vec<Document>, K8sError> {
    // Names end up as DNS labels (pod hostnames, label values): 63 characters; the
    // installer appends `-profiles`.
    check_name("--name", &opts.name, 50)?;
    check_name("--namespace", &opts.namespace, 63)?;
    check_name("--runtime-class", &opts.runtime_class, 63)?;
    check_name("--runtime-handler", &opts.handler, 63)?;
    if opts.replicas == 0 {
        return Err(K8sError::NoReplicas);
    }
    if policy.workspace.is_some() {
        return Err(K8sError::HostDirectory {
            field: "workspace (--workspace)",
        });
    }
    if policy.input.is_some() {
        return Err(K8sError::HostDirectory {
            field: "input (--input)",
        });
    }
    let mut docs = node::installer(policy, opts);
    docs.push(node::runtime_class(opts));
    match opts.kind {
        Kind::Pod | Kind::Job => {
            docs.push(pod::network_policy(policy, opts));
            docs.push(pod::workload(policy, opts));
        }
        Kind::SandboxTemplate => docs.push(sandbox::template(policy, opts)),
        Kind::WarmPool => {
            docs.push(sandbox::template(policy, opts));
            docs.push(sandbox::warm_pool(opts));
        }
    }
    Ok(docs)
}

/// Prints documents as one YAML stream, each opened by `---` and its comment lines.
pub fn to_yaml(docs: &[Document]) -> String {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        for c in &d.comments {
            out.push_str("# ");
            out.push_str(c);
            out.push('\n');
        }
        out.push_str(&serde_yaml_ng::to_string(&d.object).expect("a JSON value serializes"));
    }
    out
}

/// A Kubernetes quantity for a byte count: the largest binary unit that divides it.
pub fn bytes_quantity(bytes: u64) -> String {
    for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A Kubernetes CPU quantity for thousandths of a core: whole cores as a number, else
/// millicores.
pub fn cpu_quantity(millis: u32) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

#[cfg(test)]
mod tests;
