//! Every spec stockade emits validates against the OCI runtime-spec JSON schema, over a
//! matrix of policies and hosts; and the specs of the default and example policies match
//! their golden files (`UPDATE_GOLDEN=1 cargo test --test spec_schema` rewrites them).

mod common;

use std::path::{Path, PathBuf};

use common::policy_env::FakePolicyEnv;
use serde_json::Value;
use stockade::host::{CgroupMode, HostFacts};
use stockade::policy::{BindMount, Policy, PolicyOverrides, TmpfsMount, ValidatedPolicy};
use stockade::spec::{self, SpecRequest};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The runtime-spec schema (draft-04) with its relative `$ref`s resolved from the files
/// beside it.
fn validator() -> jsonschema::Validator {
    let dir = fixtures().join("oci-runtime-spec-schema");
    let base = format!("file://{}/", dir.display());
    let mut opts = jsonschema::options().with_draft(jsonschema::Draft::Draft4);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let uri = format!("{base}{}", path.file_name().unwrap().to_str().unwrap());
        opts = opts.with_resource(
            uri,
            jsonschema::Resource::from_contents(doc).expect("schema resource"),
        );
    }
    let root: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config-schema.json")).unwrap())
            .unwrap();
    opts.with_base_uri(format!("{base}config-schema.json"))
        .build(&root)
        .expect("the runtime-spec schema compiles")
}

/// Directories exist under /srv; files do not.
fn env() -> FakePolicyEnv {
    FakePolicyEnv::new().dirs_beneath("/srv")
}

fn policies() -> Vec<(String, ValidatedPolicy)> {
    let mut out = Vec::new();
    let flag_sets: Vec<(&str, PolicyOverrides)> = vec![
        ("default", PolicyOverrides::default()),
        (
            "all-flags",
            PolicyOverrides {
                image: Some("python".into()),
                memory: Some("256M".into()),
                cpus: Some("0.5".into()),
                pids: Some("64".into()),
                timeout: Some("30s".into()),
                network: Some("loopback".into()),
                allow: vec![],
                publish: vec![],
                workspace: Some("/w".into()),
                input: Some("/i".into()),
                env: vec!["A=1".into()],
                user: Some("1000:1000".into()),
                max_output: Some("1M".into()),
                cap_add: vec!["NET_BIND_SERVICE".into()],
                seccomp: Some("strict".into()),
                apparmor: Some("custom".into()),
                read_write_root: true,
                disk: Some("2G".into()),
                workspace_size: None,
                mounts: vec![
                    BindMount::parse("/srv/data:/data:ro").unwrap(),
                    BindMount::parse("/srv/out:/data/out").unwrap(),
                ],
                tmpfs: vec![
                    TmpfsMount::parse("/cache").unwrap(),
                    TmpfsMount::parse("/build:size=1g,mode=755,exec").unwrap(),
                ],
                cwd: Some("/data".into()),
                workspace_owner: Some("sandbox".into()),
            },
        ),
        (
            "managed-workspace",
            PolicyOverrides {
                read_write_root: true,
                disk: Some("512M".into()),
                workspace_size: Some("256M".into()),
                ..Default::default()
            },
        ),
        (
            "egress",
            PolicyOverrides {
                network: Some("egress".into()),
                allow: vec!["169.254.169.254".into()],
                ..Default::default()
            },
        ),
        (
            "unconfined",
            PolicyOverrides {
                seccomp: Some("unconfined".into()),
                apparmor: Some("unconfined".into()),
                user: Some("0".into()),
                cap_add: vec!["CHOWN".into(), "SETUID".into()],
                ..Default::default()
            },
        ),
    ];
    for (name, o) in flag_sets {
        out.push((
            name.to_string(),
            Policy::default().validate(None, &o, &env()).unwrap(),
        ));
    }
    let userns = "[security.user_namespace]\nhost_id = 100000\nsize = 65536\n[limits]\nnproc = 50\nio_weight = 200";
    out.push((
        "userns".into(),
        Policy::from_toml(userns, "userns.toml")
            .unwrap()
            .validate(None, &PolicyOverrides::default(), &env())
            .unwrap(),
    ));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let p = Policy::from_toml(&text, &name)
            .unwrap()
            .validate(Some(&name), &PolicyOverrides::default(), &env())
            .unwrap();
        out.push((format!("example-{name}"), p));
    }
    out
}

fn hosts() -> Vec<(&'static str, HostFacts)> {
    let mut v1 = HostFacts::hybrid_no_apparmor();
    v1.cgroup = CgroupMode::V1;
    v1.swap_accounting = false;
    vec![
        ("v2-apparmor", HostFacts::capable_v2()),
        ("hybrid", HostFacts::hybrid_no_apparmor()),
        ("v1-noswap", v1),
    ]
}

#[test]
fn every_emitted_spec_validates_against_the_runtime_spec_schema() {
    let v = validator();
    let args: Vec<String> = ["/bin/sh", "-c", "echo hi"].map(String::from).to_vec();
    let mut checked = 0;
    for (pname, p) in policies() {
        for (hname, host) in hosts() {
            for terminal in [false, true] {
                let built = spec::build(
                    &p,
                    &host,
                    &SpecRequest {
                        id: "schema-test",
                        args: &args,
                        terminal,
                    },
                )
                .unwrap();
                let mut built = built;
                if stockade::network::needs_netns(p.network) {
                    // As a run patches it: the namespace file stockade made for the sandbox.
                    let cfg = stockade::network::NetConfig::default();
                    stockade::network::join_netns(&mut built.spec, &cfg.netns_path("schema-test"));
                }
                let json: Value = serde_json::from_str(&spec::to_pretty_json(&built.spec)).unwrap();
                let errors: Vec<String> = v
                    .iter_errors(&json)
                    .map(|e| format!("{} at {}", e, e.instance_path))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{pname} on {hname} (terminal={terminal}): {errors:#?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 7 * 3 * 2, "checked only {checked} specs");
}

#[test]
fn the_validator_rejects_invalid_specs() {
    // The schema's own bad fixture, and a stockade spec broken on purpose: the test above
    // would prove nothing if the validator accepted everything.
    let v = validator();
    let p = Policy::default()
        .validate(None, &PolicyOverrides::default(), &env())
        .unwrap();
    let args = vec!["true".to_string()];
    let built = spec::build(
        &p,
        &HostFacts::capable_v2(),
        &SpecRequest {
            id: "x",
            args: &args,
            terminal: false,
        },
    )
    .unwrap();
    let mut json = serde_json::to_value(&built.spec).unwrap();
    json["process"]["user"]["uid"] = Value::String("nobody".into());
    assert!(!v.is_valid(&json));
    let mut json = serde_json::to_value(&built.spec).unwrap();
    json["linux"]["namespaces"][0]["type"] = Value::String("bogus".into());
    assert!(!v.is_valid(&json));
    let mut json = serde_json::to_value(&built.spec).unwrap();
    json.as_object_mut().unwrap().remove("ociVersion");
    assert!(!v.is_valid(&json));
}

#[test]
fn specs_match_golden_files() {
    let dir = fixtures().join("golden/spec");
    let args: Vec<String> = ["/bin/sh", "-c", "echo hi"].map(String::from).to_vec();
    for (pname, p) in policies() {
        for (hname, host) in hosts().into_iter().take(2) {
            let built = spec::build(
                &p,
                &host,
                &SpecRequest {
                    id: "golden",
                    args: &args,
                    terminal: false,
                },
            )
            .unwrap();
            let mut built = built;
            if stockade::network::needs_netns(p.network) {
                let cfg = stockade::network::NetConfig::default();
                stockade::network::join_netns(&mut built.spec, &cfg.netns_path("golden"));
            }
            let got = spec::to_pretty_json(&built.spec) + "\n";
            let path = dir.join(format!("{pname}.{hname}.json"));
            common::assert_golden(&path, &got, "the built spec");
        }
    }
}

/// The pty budget: without a terminal no devpts instance is mounted (so `/dev/ptmx` leads
/// nowhere) and the spec's device rules name no pty device; with one, a devpts instance of
/// at most `TERMINAL_PTYS` ptys, mounted right after `/dev`, and the two pty rules.
#[test]
fn ptys_exist_only_with_a_terminal_and_are_bounded() {
    // The console itself is one pty.
    const { assert!(spec::TERMINAL_PTYS >= 1) };
    let args = vec!["true".to_string()];
    for (pname, p) in policies() {
        for (hname, host) in hosts() {
            for terminal in [false, true] {
                let req = SpecRequest {
                    id: "x",
                    args: &args,
                    terminal,
                };
                let spec = spec::build(&p, &host, &req).unwrap().spec;
                let json = serde_json::to_value(&spec).unwrap();
                let mounts = json["mounts"].as_array().unwrap();
                let at = |dest: &str| mounts.iter().position(|m| m["destination"] == dest);
                let pts = at("/dev/pts");
                let rules = json["linux"]["resources"]["devices"].as_array().unwrap();
                let pty_rules = rules
                    .iter()
                    .filter(|r| r["major"] == 136 || (r["major"] == 5 && r["minor"] == 2))
                    .count();
                let case = format!("{pname} on {hname}, terminal {terminal}");
                if !terminal {
                    assert_eq!(pts, None, "{case}: a devpts without a terminal");
                    assert_eq!(pty_rules, 0, "{case}: pty device rules");
                    continue;
                }
                let i = pts.unwrap_or_else(|| panic!("{case}: no devpts"));
                assert_eq!(
                    Some(i - 1),
                    at("/dev"),
                    "{case}: devpts not right after /dev"
                );
                let options: Vec<&str> = mounts[i]["options"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o.as_str().unwrap())
                    .collect();
                let max = format!("max={}", spec::TERMINAL_PTYS);
                for want in ["newinstance", "nosuid", "noexec", max.as_str()] {
                    assert!(options.contains(&want), "{case}: {options:?} lacks {want}");
                }
                assert_eq!(pty_rules, 2, "{case}: pty device rules");
            }
        }
    }
}
