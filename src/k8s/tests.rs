use super::*;
use crate::policy::{HostPolicyEnv, Policy, PolicyOverrides};

fn policy(toml: &str, o: PolicyOverrides) -> ValidatedPolicy {
    Policy::from_toml(toml, "test.toml")
        .unwrap()
        .validate(Some("test.toml"), &o, &HostPolicyEnv)
        .unwrap()
}

fn pod(docs: &[Document]) -> &Value {
    docs.iter()
        .map(|d| &d.object)
        .find(|o| o["kind"] == "Pod")
        .expect("a Pod")
}

#[test]
fn quantities_use_the_largest_exact_unit() {
    assert_eq!(bytes_quantity(512 << 20), "512Mi");
    assert_eq!(bytes_quantity(1 << 30), "1Gi");
    assert_eq!(bytes_quantity(1000), "1000");
    assert_eq!(bytes_quantity(3 << 10), "3Ki");
    assert_eq!(cpu_quantity(1000), "1");
    assert_eq!(cpu_quantity(500), "500m");
    assert_eq!(cpu_quantity(2500), "2500m");
}

#[test]
fn the_pod_names_the_profile_the_installer_writes() {
    let p = policy("", PolicyOverrides::default());
    let docs = render(&p, &Options::new(Kind::Pod)).unwrap();
    let json = seccomp_profile_json(&p).unwrap();
    let file = seccomp_file_name(&json);
    let cm = docs
        .iter()
        .find(|d| d.object["kind"] == "ConfigMap")
        .unwrap();
    assert_eq!(cm.object["data"][&file], json.as_str());
    let sc = &pod(&docs)["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["seccompProfile"]["type"], "Localhost");
    assert_eq!(
        sc["seccompProfile"]["localhostProfile"],
        format!("stockade/{file}")
    );
    // The network-none profile: sockets only for AF_UNIX, as `stockade run` has it.
    assert!(json.contains("\"socket\""));
}

#[test]
fn different_network_modes_get_different_profiles() {
    let none = policy("", PolicyOverrides::default());
    let lo = policy(
        "",
        PolicyOverrides {
            network: Some("loopback".into()),
            ..Default::default()
        },
    );
    assert_ne!(seccomp_localhost_path(&none), seccomp_localhost_path(&lo));
}

#[test]
fn granted_capabilities_are_added_after_dropping_all() {
    let p = policy(
        "",
        PolicyOverrides {
            cap_add: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        },
    );
    let docs = render(&p, &Options::new(Kind::Pod)).unwrap();
    let caps = &pod(&docs)["spec"]["containers"][0]["securityContext"]["capabilities"];
    assert_eq!(caps["drop"], serde_json::json!(["ALL"]));
    assert_eq!(caps["add"], serde_json::json!(["NET_BIND_SERVICE"]));
}

#[test]
fn a_host_directory_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        "",
        PolicyOverrides {
            workspace: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    );
    let e = render(&p, &Options::new(Kind::Pod))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("workspace (--workspace)"), "{e}");
}

#[test]
fn bad_names_are_refused_naming_the_flag() {
    let p = policy("", PolicyOverrides::default());
    let mut o = Options::new(Kind::Pod);
    o.name = "Not_A_Name".into();
    let e = render(&p, &o).unwrap_err().to_string();
    assert!(e.starts_with("--name: `Not_A_Name`"), "{e}");
}

#[test]
fn the_timeout_becomes_the_deadline_except_for_warm_pods() {
    let p = policy("[limits]\ntimeout = \"30s\"\n", PolicyOverrides::default());
    let docs = render(&p, &Options::new(Kind::Pod)).unwrap();
    assert_eq!(pod(&docs)["spec"]["activeDeadlineSeconds"], 30);
    let docs = render(&p, &Options::new(Kind::WarmPool)).unwrap();
    let t = docs
        .iter()
        .find(|d| d.object["kind"] == "SandboxTemplate")
        .unwrap();
    assert!(t.object["spec"]["podTemplate"]["spec"]
        .get("activeDeadlineSeconds")
        .is_none());
    assert!(t.comments.iter().any(|c| c.contains("shutdownTime")));
}

#[test]
fn yaml_is_one_document_per_object() {
    let p = policy("", PolicyOverrides::default());
    let docs = render(&p, &Options::new(Kind::WarmPool)).unwrap();
    let yaml = to_yaml(&docs);
    assert_eq!(yaml.matches("---\n").count(), docs.len());
    for d in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let v: Value = serde::Deserialize::deserialize(d).unwrap();
        assert!(v["kind"].is_string());
    }
}

#[test]
fn what_stockade_masks_beyond_kubernetes_is_declared_on_the_pod() {
    let beyond = masked_beyond_kubernetes();
    assert!(beyond.contains(&"/proc/interrupts".to_string()));
    assert!(beyond.contains(&"/sys/devices/system/cpu/cpu*/thermal_throttle".to_string()));
    assert!(beyond
        .iter()
        .all(|p| !KUBERNETES_MASKED_PATHS.contains(&p.as_str())));
    let docs = render(
        &policy("", PolicyOverrides::default()),
        &Options::new(Kind::Pod),
    )
    .unwrap();
    assert_eq!(
        pod(&docs)["metadata"]["annotations"]["org.stockade.masked-paths"],
        beyond.join(",")
    );
}

#[test]
fn added_capabilities_of_a_non_root_user_are_declared_unexpressed() {
    let caps = |user: &str| {
        let p = policy(
            "",
            PolicyOverrides {
                user: Some(user.into()),
                cap_add: vec!["NET_BIND_SERVICE".into()],
                ..Default::default()
            },
        );
        let docs = render(&p, &Options::new(Kind::Pod)).unwrap();
        pod(&docs)["metadata"]["annotations"]["org.stockade.capabilities.ambient"].clone()
    };
    assert_eq!(caps("1000:1000"), "NET_BIND_SERVICE");
    assert_eq!(caps("0:0"), Value::Null);
}
