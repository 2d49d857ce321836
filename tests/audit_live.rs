//! `stockade audit --containerd` against a real containerd of the test's own: container
//! records with known specs in two namespaces (one of them Kubernetes' `k8s.io`), read back
//! through the Containers API and audited. No task runs; a record with a spec is enough.

mod common;

use std::process::Command;

use containerd_client::services::v1::{
    container::Runtime, Container, CreateContainerRequest, DeleteContainerRequest,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_stockade");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/audit")
            .join(name),
    )
    .unwrap()
}

async fn create(client: &stockade::containerd::Client, id: &str, spec: &str) {
    let container = Container {
        id: id.to_string(),
        runtime: Some(Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: spec.as_bytes().to_vec(),
        }),
        ..Default::default()
    };
    client
        .containers()
        .create(client.request(CreateContainerRequest {
            container: Some(container),
        }))
        .await
        .unwrap_or_else(|e| panic!("create container {id}: {e}"));
}

fn audit(address: &str, args: &[&str]) -> (Option<i32>, Value, String) {
    let o = Command::new(BIN)
        .args([
            "audit",
            "--containerd",
            "--address",
            address,
            "--format",
            "json",
        ])
        .args(args)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (
        o.status.code(),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn sources(v: &Value) -> Vec<String> {
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"].as_str().unwrap().to_string())
        .collect()
}

fn rules_of(v: &Value, source: &str) -> Vec<String> {
    let t = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["source"] == source)
        .unwrap_or_else(|| panic!("{source} not audited"));
    t["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_live_containers_by_namespace_id_and_across_namespaces() {
    if !common::require_root_or_skip("live audit needs a private containerd") {
        return;
    }
    let daemon = common::PrivateContainerd::start().await;
    let addr = daemon.address().display().to_string();
    let default = daemon.client("default").await;
    let k8s = daemon.client("k8s.io").await;
    create(&default, "web", &fixture("ctr-oci-spec.json")).await;
    create(&default, "priv", &fixture("privileged.json")).await;
    create(&k8s, "pod-a", &fixture("runc-spec.json")).await;

    // One namespace, every container, sorted by id.
    let (code, v, err) = audit(&addr, &["--namespace", "default"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        sources(&v),
        ["containerd://default/priv", "containerd://default/web"]
    );
    assert!(rules_of(&v, "containerd://default/priv").contains(&"STK-CAP-001".to_string()));
    assert!(rules_of(&v, "containerd://default/web").contains(&"STK-SEC-001".to_string()));
    // The live spec audits exactly as the file does.
    let file = Command::new(BIN)
        .args(["audit", "--format", "json", "-"])
        .stdin(
            std::fs::File::open(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/audit/ctr-oci-spec.json"),
            )
            .unwrap(),
        )
        .output()
        .unwrap();
    let fv: Value = serde_json::from_slice(&file.stdout).unwrap();
    let live_web = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["source"] == "containerd://default/web")
        .unwrap();
    assert_eq!(live_web["findings"], fv["targets"][0]["findings"]);

    // Selected ids, and --fail-on.
    let (code, v, err) = audit(&addr, &["-n", "default", "--fail-on", "critical", "web"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(sources(&v), ["containerd://default/web"]);
    let (code, _, _) = audit(&addr, &["-n", "default", "--fail-on", "critical", "priv"]);
    assert_eq!(code, Some(1));

    // Kubernetes' namespace, and all namespaces at once.
    let (code, v, err) = audit(&addr, &["--namespace", "k8s.io"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(sources(&v), ["containerd://k8s.io/pod-a"]);
    let (code, v, err) = audit(&addr, &["--all-namespaces"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        sources(&v),
        [
            "containerd://default/priv",
            "containerd://default/web",
            "containerd://k8s.io/pod-a"
        ]
    );

    // SARIF names live containers by URI.
    let o = Command::new(BIN)
        .args([
            "audit",
            "--containerd",
            "--address",
            &addr,
            "--all-namespaces",
            "--format",
            "sarif",
        ])
        .output()
        .unwrap();
    let sarif: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        sarif["runs"][0]["artifacts"][2]["location"]["uri"],
        "containerd://k8s.io/pod-a"
    );

    // A missing id and an unreachable socket are errors: exit 125, one line.
    let (code, _, err) = audit(&addr, &["-n", "default", "nope"]);
    assert_eq!(code, Some(125));
    assert!(
        err.contains("container `nope` not found in namespace `default`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let gone = daemon.base().join("no.sock").display().to_string();
    let (code, _, err) = audit(&gone, &[]);
    assert_eq!(code, Some(125));
    assert!(err.contains("no.sock"), "{err}");

    // A record whose spec is not JSON is reported and makes the run fail, after the others.
    create(&default, "broken", "not json").await;
    let (code, v, err) = audit(&addr, &["-n", "default"]);
    assert_eq!(code, Some(125));
    assert!(
        err.contains("containerd://default/broken: not valid JSON"),
        "{err}"
    );
    assert_eq!(sources(&v).len(), 2);

    for (c, id) in [
        (&default, "web"),
        (&default, "priv"),
        (&default, "broken"),
        (&k8s, "pod-a"),
    ] {
        c.containers()
            .delete(c.request(DeleteContainerRequest { id: id.into() }))
            .await
            .unwrap();
    }
    drop(daemon);
}
