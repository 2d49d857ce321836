use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// An in-memory filesystem: directories that exist (by the path the user gives, mapped to
/// their canonical form) and files with contents.
#[derive(Default)]
struct FakeEnv {
    dirs: HashMap<PathBuf, PathBuf>,
    files: HashMap<PathBuf, String>,
    /// Bind roots; the defaults when empty.
    roots: Vec<PathBuf>,
}

impl FakeEnv {
    fn with_dir(mut self, given: &str, canonical: &str) -> Self {
        self.dirs.insert(given.into(), canonical.into());
        self
    }
    fn with_file(mut self, path: &str, text: &str) -> Self {
        self.files.insert(path.into(), text.into());
        self
    }
}

impl PolicyEnv for FakeEnv {
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn bind_dir(&self, path: &Path) -> Result<HostDir, BindError> {
        self.dirs
            .get(path)
            .map(|p| HostDir {
                path: p.clone(),
                dev: 8,
                ino: p.as_os_str().len() as u64,
            })
            .ok_or_else(|| BindError::Resolve {
                path: path.to_path_buf(),
                reason: "no such directory".to_string(),
            })
    }
    fn bind_roots(&self) -> Vec<PathBuf> {
        if self.roots.is_empty() {
            crate::bind::roots_from(None)
        } else {
            self.roots.clone()
        }
    }
}

fn validate_toml(text: &str) -> Result<ValidatedPolicy, PolicyError> {
    Policy::from_toml(text, "p.toml")?.validate(
        Some("p.toml"),
        &PolicyOverrides::default(),
        &FakeEnv::default(),
    )
}

fn validate_flags(o: PolicyOverrides) -> Result<ValidatedPolicy, PolicyError> {
    Policy::default().validate(None, &o, &FakeEnv::default().with_dir("/w", "/srv/w"))
}

#[test]
fn defaults_are_the_design_security_table() {
    let p = Policy::default()
        .validate(None, &PolicyOverrides::default(), &FakeEnv::default())
        .unwrap();
    assert_eq!(p.image, "stockade/busybox");
    assert_eq!(
        p.user,
        User {
            uid: 65534,
            gid: 65534
        }
    );
    assert!(p.no_new_privileges);
    assert!(p.cap_add.is_empty());
    assert!(p.read_only_root);
    assert_eq!(p.network, NetworkMode::None);
    assert_eq!(p.limits.memory, 512 << 20);
    assert_eq!(p.limits.cpu_millis, 1000);
    assert_eq!(p.limits.pids, 256);
    assert_eq!(p.limits.nofile, 1024);
    assert_eq!(p.limits.timeout, Duration::from_secs(300));
    assert_eq!(p.limits.max_output, 10 << 20);
    assert!(matches!(&p.seccomp, SeccompChoice::Profile { name, .. } if name == "default"));
    assert_eq!(
        p.apparmor,
        AppArmorChoice::Profile("stockade-default".into())
    );
    assert_eq!(p.workspace, None);
    assert_eq!(p.input, None);
    assert_eq!(p.user_namespace, None);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn every_field_of_a_full_policy_is_carried() {
    let text = r#"
image = "python"
[process]
user = "1000:2000"
env = ["LANG=C.UTF-8", "HOME=/workspace"]
cwd = "/workspace/src"
hostname = "agent-1"
[limits]
memory = "256M"
cpus = 0.5
pids = 64
nofile = 512
nproc = 100
fsize = "16Mi"
timeout = "30s"
max_output = "1M"
tmp_size = "32Mi"
shm_size = "8Mi"
io_weight = 100
oom_score_adj = 900
[network]
mode = "loopback"
[filesystem]
read_write_root = true
workspace = "/w"
input = "/in"
[security]
cap_add = ["NET_BIND_SERVICE", "cap_chown"]
seccomp = "strict"
apparmor = "my-profile"
no_new_privileges = false
[security.user_namespace]
host_id = 200000
size = 65536
"#;
    let env = FakeEnv::default()
        .with_dir("/w", "/srv/w")
        .with_dir("/in", "/srv/in");
    let p = Policy::from_toml(text, "p.toml")
        .unwrap()
        .validate(Some("p.toml"), &PolicyOverrides::default(), &env)
        .unwrap();
    assert_eq!(p.image, "python");
    assert_eq!(
        p.user,
        User {
            uid: 1000,
            gid: 2000
        }
    );
    assert!(p.env.contains(&"LANG=C.UTF-8".to_string()));
    assert!(p.env.contains(&"HOME=/workspace".to_string()));
    assert!(
        !p.env.contains(&"HOME=/tmp".to_string()),
        "later HOME replaces default"
    );
    assert_eq!(p.cwd, "/workspace/src");
    assert_eq!(p.hostname, "agent-1");
    assert_eq!(p.limits.memory, 256 << 20);
    assert_eq!(p.limits.cpu_millis, 500);
    assert_eq!(p.limits.pids, 64);
    assert_eq!(p.limits.nofile, 512);
    assert_eq!(p.limits.nproc, Some(100));
    assert_eq!(p.limits.fsize, 16 << 20);
    assert_eq!(p.limits.timeout, Duration::from_secs(30));
    assert_eq!(p.limits.max_output, 1 << 20);
    assert_eq!(p.limits.tmp_size, 32 << 20);
    assert_eq!(p.limits.shm_size, 8 << 20);
    assert_eq!(p.limits.io_weight, Some(100));
    assert_eq!(p.limits.oom_score_adj, 900);
    assert_eq!(p.network, NetworkMode::Loopback);
    assert!(!p.read_only_root);
    assert_eq!(p.workspace.map(|d| d.path), Some(PathBuf::from("/srv/w")));
    assert_eq!(p.input.map(|d| d.path), Some(PathBuf::from("/srv/in")));
    assert_eq!(p.cap_add.len(), 2);
    assert!(matches!(&p.seccomp, SeccompChoice::Profile { name, .. } if name == "strict"));
    assert_eq!(p.apparmor, AppArmorChoice::Profile("my-profile".into()));
    assert!(!p.no_new_privileges);
    assert_eq!(
        p.user_namespace,
        Some(IdMap {
            host_id: 200000,
            size: 65536
        })
    );
    // Every loosening is announced.
    assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
}

#[test]
fn flags_override_the_file() {
    let o = PolicyOverrides {
        image: Some("python".into()),
        memory: Some("256M".into()),
        cpus: Some("0.5".into()),
        pids: Some("64".into()),
        timeout: Some("1500ms".into()),
        network: Some("loopback".into()),
        workspace: Some("/w".into()),
        env: vec!["A=1".into(), "A=2".into()],
        user: Some("1000".into()),
        max_output: Some("1K".into()),
        seccomp: Some("unconfined".into()),
        apparmor: Some("unconfined".into()),
        read_write_root: true,
        ..Default::default()
    };
    let p = Policy::from_toml("[limits]\nmemory = \"1G\"\npids = 10\n", "p.toml")
        .unwrap()
        .validate(
            Some("p.toml"),
            &o,
            &FakeEnv::default().with_dir("/w", "/srv/w"),
        )
        .unwrap();
    assert_eq!(p.image, "python");
    assert_eq!(p.limits.memory, 256 << 20);
    assert_eq!(p.limits.cpu_millis, 500);
    assert_eq!(p.limits.pids, 64);
    assert_eq!(p.limits.timeout, Duration::from_millis(1500));
    assert_eq!(p.network, NetworkMode::Loopback);
    assert_eq!(p.workspace.map(|d| d.path), Some(PathBuf::from("/srv/w")));
    assert_eq!(p.cwd, "/workspace");
    assert_eq!(p.env.iter().filter(|e| e.starts_with("A=")).count(), 1);
    assert!(p.env.contains(&"A=2".to_string()));
    assert_eq!(
        p.user,
        User {
            uid: 1000,
            gid: 1000
        }
    );
    assert_eq!(p.limits.max_output, 1024);
    assert_eq!(p.seccomp, SeccompChoice::Unconfined);
    assert_eq!(p.apparmor, AppArmorChoice::Unconfined);
    assert!(!p.read_only_root);
}

/// The directory's identity is part of the policy (and its hash): a directory replaced at
/// the same path is a different policy, so a pooled sandbox made for the old one is never
/// handed a run for the new one.
#[test]
fn a_replaced_directory_changes_the_policy_hash() {
    let o = PolicyOverrides {
        workspace: Some("/srv/w".into()),
        ..Default::default()
    };
    let env = FakeEnv::default().with_dir("/srv/w", "/srv/w");
    let before = Policy::default().validate(None, &o, &env).unwrap();
    let mut after = before.clone();
    after.workspace.as_mut().unwrap().ino += 1;
    assert_ne!(before.hash(), after.hash());
}

#[test]
fn seccomp_profile_from_a_file_is_loaded_and_bad_json_is_rejected() {
    let env = FakeEnv::default()
        .with_file(
            "/p/good.json",
            crate::seccomp::builtin_profile("default").unwrap(),
        )
        .with_file("/p/bad.json", "{ not json");
    let ok = Policy::default().validate(
        None,
        &PolicyOverrides {
            seccomp: Some("/p/good.json".into()),
            ..Default::default()
        },
        &env,
    );
    assert!(
        matches!(ok.unwrap().seccomp, SeccompChoice::Profile { name, .. } if name == "/p/good.json")
    );
    let e = Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                seccomp: Some("/p/bad.json".into()),
                ..Default::default()
            },
            &env,
        )
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--seccomp: /p/bad.json"), "{e}");
}

#[test]
fn cap_add_accepts_any_spelling_and_dedups() {
    let o = PolicyOverrides {
        cap_add: vec![
            "net_bind_service".into(),
            "CAP_NET_BIND_SERVICE".into(),
            "Chown".into(),
        ],
        ..Default::default()
    };
    let p = validate_flags(o).unwrap();
    assert_eq!(p.cap_add.len(), 2);
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn policy_hash_changes_with_any_field_and_is_stable() {
    let a = validate_flags(PolicyOverrides::default()).unwrap();
    let b = validate_flags(PolicyOverrides::default()).unwrap();
    assert_eq!(a.hash(), b.hash());
    let c = validate_flags(PolicyOverrides {
        pids: Some("255".into()),
        ..Default::default()
    })
    .unwrap();
    assert_ne!(a.hash(), c.hash());
    assert!(a.hash().starts_with("sha256:"));
}

#[test]
fn example_policies_parse_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        let env = FakeEnv::default()
            .with_dir("/srv/workspace", "/srv/workspace")
            .with_dir("/srv/input", "/srv/input");
        Policy::from_toml(&text, &name)
            .and_then(|p| p.validate(Some(&name), &PolicyOverrides::default(), &env))
            .unwrap_or_else(|e| panic!("{e}"));
        n += 1;
    }
    assert!(n >= 4, "expected at least four example policies, found {n}");
}

proptest! {
    /// Whatever the document, parsing and validation return a value or an error; never panic.
    #[test]
    fn arbitrary_toml_never_panics(text in "\\PC{0,200}") {
        let _ = validate_toml(&text);
    }

    /// Structured fuzzing of the limits section with arbitrary strings.
    #[test]
    fn arbitrary_limit_values_never_panic(
        memory in "\\PC{0,12}", timeout in "\\PC{0,12}", cpus in any::<f64>(), pids in any::<i64>()
    ) {
        let p = Policy {
            limits: LimitsSection {
                memory: Some(memory),
                timeout: Some(timeout),
                cpus: Some(cpus),
                pids: Some(pids),
                ..Default::default()
            },
            ..Default::default()
        };
        let _ = p.validate(None, &PolicyOverrides::default(), &FakeEnv::default());
    }

    /// Any accepted user string round-trips to the numbers in it.
    #[test]
    fn user_parses_numbers(uid in 0u32..u32::MAX, gid in 0u32..u32::MAX) {
        let p = validate_flags(PolicyOverrides { user: Some(format!("{uid}:{gid}")), ..Default::default() }).unwrap();
        prop_assert_eq!(p.user, User { uid, gid });
    }
}

#[test]
fn seccomp_profile_warnings_reach_the_policy() {
    // `mseal` is newer than the libseccomp these hosts ship: it is accepted, and the run
    // says that calls to it get the default action.
    let profile = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "mseal"], "action": "SCMP_ACT_ALLOW", "comment": "test"}]}"#;
    let env = FakeEnv::default().with_file("/p/new.json", profile);
    let p = Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                seccomp: Some("/p/new.json".into()),
                ..Default::default()
            },
            &env,
        )
        .unwrap();
    let known = crate::seccomp::classify("mseal");
    if matches!(known, crate::seccomp::NameClass::Newer(_)) {
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with("--seccomp") && w.contains("mseal")),
            "{:?}",
            p.warnings
        );
    }
}

#[test]
fn errors_stay_one_line_whatever_the_input() {
    for o in [
        PolicyOverrides {
            env: vec!["a\nb".into()],
            ..Default::default()
        },
        PolicyOverrides {
            memory: Some("1\nG".into()),
            ..Default::default()
        },
        PolicyOverrides {
            timeout: Some("5\r\ns".into()),
            ..Default::default()
        },
        PolicyOverrides {
            apparmor: Some("x\ny".into()),
            ..Default::default()
        },
        PolicyOverrides {
            image: Some("a\nb".into()),
            ..Default::default()
        },
    ] {
        let e = validate_flags(o).unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.contains('\r'), "{e:?}");
    }
    assert!(!parse_size("a\nb").unwrap_err().to_string().contains('\n'));
}

mod refusals;

#[test]
fn every_network_mode_is_named_by_its_name_and_listed() {
    let listed: Vec<&str> = NetworkMode::NAMES.split(", ").collect();
    assert_eq!(listed.len(), 5);
    for name in &listed {
        let m = NetworkMode::from_name(name).expect(name);
        assert_eq!(m.as_str(), *name);
    }
    for bad in ["", "None", "egres", "host", "bridge"] {
        assert_eq!(NetworkMode::from_name(bad), None, "{bad}");
    }
}
