use std::path::Path;

use super::request_policy;
use crate::policy::{HostPolicyEnv, Policy, PolicyEnv, PolicyOverrides};
use crate::serve::docker::create::ServerPolicy;

/// No directories, no files: what a request may ask for needs neither.
struct NoFs;

impl PolicyEnv for NoFs {
    fn read_file(&self, _: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn bind_dir(&self, p: &Path) -> Result<crate::policy::HostDir, crate::policy::BindError> {
        Err(crate::policy::BindError::Resolve {
            path: p.to_path_buf(),
            reason: "no such directory".to_string(),
        })
    }
}

fn server(toml: &str) -> ServerPolicy {
    let policy = Policy::from_toml(toml, "server.toml").unwrap();
    let ceiling = policy
        .clone()
        .validate(None, &PolicyOverrides::default(), &HostPolicyEnv)
        .unwrap();
    ServerPolicy {
        policy,
        ceiling,
        allow_bind: Vec::new(),
    }
}

fn request(json: serde_json::Value) -> Result<crate::policy::ValidatedPolicy, super::HttpError> {
    let p: Policy = serde_json::from_value(json).unwrap();
    request_policy(
        &server("[limits]\nmemory = \"256Mi\"\npids = 64\n"),
        Some(&p),
        &NoFs,
    )
}

#[test]
fn a_request_tightens_the_servers_policy_and_keeps_the_rest() {
    let p = request(serde_json::json!({"limits": {"memory": "128Mi"}})).unwrap();
    assert_eq!(p.limits.memory, 128 << 20);
    // The server's pids limit stays where the request says nothing.
    assert_eq!(p.limits.pids, 64);
    let none = request_policy(&server(""), None, &NoFs).unwrap();
    assert_eq!(none.limits.memory, 512 << 20);
}

#[test]
fn loosening_is_refused_with_403_naming_the_field() {
    let cases = [
        (
            serde_json::json!({"limits": {"memory": "1Gi"}}),
            "policy.limits.memory",
        ),
        (
            serde_json::json!({"limits": {"pids": 1000}}),
            "policy.limits.pids",
        ),
        (
            serde_json::json!({"limits": {"cpus": 8.0}}),
            "policy.limits.cpus",
        ),
        (
            serde_json::json!({"limits": {"timeout": "1h"}}),
            "policy.limits.timeout",
        ),
        (
            serde_json::json!({"limits": {"oom_score_adj": 100}}),
            "policy.limits.oom_score_adj",
        ),
        (
            serde_json::json!({"filesystem": {"workspace": "/etc"}}),
            "policy.filesystem.workspace",
        ),
        (
            serde_json::json!({"filesystem": {"input": "/"}}),
            "policy.filesystem.input",
        ),
        (
            serde_json::json!({"filesystem": {"mounts": [{"source": "/", "destination": "/h"}]}}),
            "policy.filesystem.mounts",
        ),
        (
            serde_json::json!({"process": {"user": "0"}}),
            "policy.process.user",
        ),
        (
            serde_json::json!({"security": {"cap_add": ["NET_RAW"]}}),
            "policy.security.cap_add",
        ),
        (
            serde_json::json!({"security": {"seccomp": "unconfined"}}),
            "policy.security.seccomp",
        ),
        (
            serde_json::json!({"security": {"seccomp": "/etc/profile.json"}}),
            "policy.security.seccomp",
        ),
        (
            serde_json::json!({"security": {"apparmor": "unconfined"}}),
            "policy.security.apparmor",
        ),
        (
            serde_json::json!({"security": {"no_new_privileges": false}}),
            "policy.security.no_new_privileges",
        ),
        (
            serde_json::json!({"security": {"user_namespace": {"host_id": 0}}}),
            "policy.security.user_namespace",
        ),
        (
            serde_json::json!({"network": {"mode": "egress"}}),
            "policy.network.mode",
        ),
        (
            serde_json::json!({"network": {"mode": "loopback"}}),
            "policy.network.mode",
        ),
        (
            serde_json::json!({"network": {"allow": ["10.0.0.0/8"]}}),
            "policy.network.allow",
        ),
    ];
    for (json, field) in cases {
        let e = request(json.clone()).unwrap_err();
        assert_eq!(e.status, 403, "{json}: {e:?}");
        assert_eq!(e.field.as_deref(), Some(field), "{json}: {e:?}");
        assert!(e.message.starts_with(field), "{json}: {}", e.message);
    }
}

#[test]
fn bad_values_are_400_naming_the_field() {
    let e = request(serde_json::json!({"limits": {"memory": "lots"}})).unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(e.field.as_deref(), Some("policy.limits.memory"));
    let e = request(serde_json::json!({"security": {"seccomp": "strict"}}));
    assert!(e.is_ok(), "strict seccomp tightens: {e:?}");
}

#[test]
fn unknown_policy_fields_are_refused_when_parsed() {
    let e = serde_json::from_value::<Policy>(serde_json::json!({"limits": {"memroy": "1M"}}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("memroy"), "{e}");
}
