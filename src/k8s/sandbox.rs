//! kubernetes-sigs/agent-sandbox objects: a `SandboxTemplate` carrying the same pod spec,
//! and a `SandboxWarmPool` that keeps `replicas` sandboxes of it ready for claims.

use serde_json::json;

use super::pod::{annotations, comments, labels, pod_spec};
use super::{Document, Options, AGENT_SANDBOX_API};
use crate::policy::ValidatedPolicy;

/// The template. Its `networkPolicy` has no rules: the controller's shared NetworkPolicy
/// then denies every ingress and egress, as the pod kinds' own NetworkPolicy does.
pub(super) fn template(policy: &ValidatedPolicy, opts: &Options) -> Document {
    let mut c = comments(policy, false);
    c.push("network: the controller manages the NetworkPolicy; no rules = deny all".into());
    Document {
        comments: c,
        object: json!({
            "apiVersion": AGENT_SANDBOX_API,
            "kind": "SandboxTemplate",
            "metadata": {"name": opts.name, "namespace": opts.namespace, "labels": labels(opts)},
            "spec": {
                "podTemplate": {
                    "metadata": {"labels": labels(opts), "annotations": annotations(policy)},
                    "spec": pod_spec(policy, opts, false),
                },
                "networkPolicyManagement": "Managed",
                "networkPolicy": {"ingress": [], "egress": []},
                "envVarsInjectionPolicy": "Disallowed",
                "volumeClaimTemplatesPolicy": "Disallowed",
            },
        }),
    }
}

/// The warm pool over the template of the same name.
pub(super) fn warm_pool(opts: &Options) -> Document {
    Document {
        comments: vec![format!(
            "{} sandboxes kept ready; a SandboxClaim naming this pool adopts one (as `stockade pool fill` \
             and a pooled `stockade run`)",
            opts.replicas
        )],
        object: json!({
            "apiVersion": AGENT_SANDBOX_API,
            "kind": "SandboxWarmPool",
            "metadata": {"name": opts.name, "namespace": opts.namespace, "labels": labels(opts)},
            "spec": {
                "replicas": opts.replicas,
                "sandboxTemplateRef": {"name": opts.name},
            },
        }),
    }
}
