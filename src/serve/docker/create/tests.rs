use serde_json::json;

use super::*;
use crate::policy::HostPolicyEnv;

fn server(toml: &str) -> ServerPolicy {
    let policy = Policy::from_toml(toml, "server.toml").unwrap();
    let ceiling = policy
        .clone()
        .validate(
            Some("server.toml"),
            &PolicyOverrides::default(),
            &HostPolicyEnv,
        )
        .unwrap();
    ServerPolicy {
        policy,
        ceiling,
        allow_bind: vec![PathBuf::from("/srv/agents")],
    }
}

fn body(v: serde_json::Value) -> CreateBody {
    let mut base = json!({"Image": "busybox", "Cmd": ["echo", "hi"], "HostConfig": {}});
    if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
        for (k, val) in extra {
            b.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(base).unwrap()
}

fn host(v: serde_json::Value) -> CreateBody {
    body(json!({ "HostConfig": v }))
}

fn map(b: &CreateBody) -> Result<ValidatedPolicy, Refusal> {
    let m = map_create(b, None, &server(""))?;
    m.validate(&HostPolicyEnv)
}

#[test]
fn every_grant_stockade_will_not_make_is_refused_with_403_naming_the_field() {
    // (what is asked, the field the message starts with)
    let cases = [
        (json!({"Privileged": true}), "HostConfig.Privileged"),
        (json!({"PidMode": "host"}), "HostConfig.PidMode"),
        (json!({"PidMode": "container:abc"}), "HostConfig.PidMode"),
        (json!({"IpcMode": "host"}), "HostConfig.IpcMode"),
        (json!({"NetworkMode": "host"}), "HostConfig.NetworkMode"),
        (
            json!({"NetworkMode": "container:x"}),
            "HostConfig.NetworkMode",
        ),
        (json!({"UTSMode": "host"}), "HostConfig.UTSMode"),
        (json!({"UsernsMode": "host"}), "HostConfig.UsernsMode"),
        (json!({"CgroupnsMode": "host"}), "HostConfig.CgroupnsMode"),
        (
            json!({"Devices": [{"PathOnHost": "/dev/sda"}]}),
            "HostConfig.Devices",
        ),
        (
            json!({"DeviceRequests": [{"Count": -1}]}),
            "HostConfig.DeviceRequests",
        ),
        (json!({"CapAdd": ["SYS_ADMIN"]}), "HostConfig.CapAdd"),
        (json!({"CapAdd": ["ALL"]}), "HostConfig.CapAdd"),
        (
            json!({"SecurityOpt": ["seccomp=unconfined"]}),
            "HostConfig.SecurityOpt",
        ),
        (
            json!({"SecurityOpt": ["apparmor:unconfined"]}),
            "HostConfig.SecurityOpt",
        ),
        (
            json!({"SecurityOpt": ["no-new-privileges=false"]}),
            "HostConfig.SecurityOpt",
        ),
        (
            json!({"SecurityOpt": ["systempaths=unconfined"]}),
            "HostConfig.SecurityOpt",
        ),
        (json!({"Binds": ["/:/host"]}), "HostConfig.Binds"),
        (
            json!({"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]}),
            "HostConfig.Binds",
        ),
        (json!({"Binds": ["/home/me:/data"]}), "HostConfig.Binds"),
        (
            json!({"Binds": ["/srv/agents/../../etc:/data"]}),
            "HostConfig.Binds",
        ),
        (
            json!({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}),
            "HostConfig.Mounts",
        ),
        (
            json!({"Sysctls": {"net.ipv4.ip_forward": "1"}}),
            "HostConfig.Sysctls",
        ),
        (json!({"GroupAdd": ["0"]}), "HostConfig.GroupAdd"),
        (json!({"MaskedPaths": []}), "HostConfig.MaskedPaths"),
        (json!({"OomKillDisable": true}), "HostConfig.OomKillDisable"),
        (json!({"CgroupParent": "/"}), "HostConfig.CgroupParent"),
        (json!({"PidsLimit": -1}), "HostConfig.PidsLimit"),
        (json!({"Memory": 1i64 << 40}), "HostConfig.Memory"),
        (
            json!({"NanoCpus": 64_000_000_000i64}),
            "HostConfig.NanoCpus",
        ),
        (
            json!({"CpuQuota": 400_000, "CpuPeriod": 100_000}),
            "HostConfig.NanoCpus",
        ),
        (json!({"PidsLimit": 100_000}), "HostConfig.PidsLimit"),
        (
            json!({"Ulimits": [{"Name": "nofile", "Soft": 1_000_000, "Hard": 1_000_000}]}),
            "HostConfig.Ulimits",
        ),
        (
            json!({"Ulimits": [{"Name": "core", "Soft": -1, "Hard": -1}]}),
            "HostConfig.Ulimits",
        ),
        (json!({"OomScoreAdj": -1000}), "HostConfig.OomScoreAdj"),
    ];
    for (asked, field) in cases {
        let r = map(&host(asked.clone())).expect_err(&asked.to_string());
        assert_eq!(r.status, 403, "{asked}: {}", r.message);
        assert!(
            r.message.starts_with(&format!("{field}: ")),
            "{asked}: {}",
            r.message
        );
        assert!(!r.message.contains('\n'));
    }
}

#[test]
fn what_is_not_implemented_yet_is_refused_with_400_naming_the_field() {
    let cases = [
        (
            host(json!({"Binds": ["/srv/agents/ws:/workspace:z"]})),
            "HostConfig.Binds: `/srv/agents/ws:/workspace:z`",
        ),
        (
            host(json!({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}]})),
            "HostConfig.Mounts: type `volume`",
        ),
        (host(json!({"Binds": ["named:/data"]})), "HostConfig.Binds"),
        (
            host(json!({"Tmpfs": {"/run": "size=100m,uid=0"}})),
            "HostConfig.Tmpfs: `/run:size=100m,uid=0`",
        ),
        (
            host(json!({"Tmpfs": {"/proc/x": ""}})),
            "HostConfig.Tmpfs: destination `/proc/x` is reserved",
        ),
        (
            body(json!({"Volumes": {"/data": {}}})),
            "Volumes: `/data`: anonymous volumes are not supported yet",
        ),
        (
            host(json!({"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}})),
            "HostConfig.PortBindings",
        ),
        (
            host(json!({"NetworkMode": "bridge"})),
            "HostConfig.NetworkMode: `bridge`: named networks",
        ),
        (
            host(json!({"RestartPolicy": {"Name": "always"}})),
            "HostConfig.RestartPolicy",
        ),
        (
            host(json!({"LogConfig": {"Type": "syslog"}})),
            "HostConfig.LogConfig",
        ),
        (
            host(json!({"SecurityOpt": ["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]})),
            "HostConfig.SecurityOpt: seccomp",
        ),
        (body(json!({"User": "postgres"})), "User: `postgres`"),
        (
            body(json!({"WorkingDir": "relative"})),
            "WorkingDir: `relative`",
        ),
        (body(json!({"Env": ["NOEQUALS"]})), "Env: `NOEQUALS`"),
        (body(json!({"Image": ""})), "Image: required"),
        (body(json!({"Cmd": null})), "Cmd: no command"),
        (
            host(json!({"Ulimits": [{"Name": "stack", "Soft": 1, "Hard": 1}]})),
            "HostConfig.Ulimits: `stack`",
        ),
    ];
    for (b, want) in cases {
        let r = map(&b).unwrap_err();
        assert_eq!(r.status, 400, "{want}: {}", r.message);
        assert!(
            r.message.starts_with(want),
            "want {want}, got {}",
            r.message
        );
    }
}

#[test]
fn a_typical_agent_request_becomes_the_same_policy_as_the_flags_of_stockade_run() {
    // `docker run --rm -i --user 1000:1000 --cap-drop ALL --security-opt no-new-privileges
    //  --read-only --network none --memory 512m --cpus 1.0 --pids-limit 100 -e K=V -w /tmp`
    let b = body(json!({
        "User": "1000:1000", "Env": ["K=V"], "WorkingDir": "/tmp", "OpenStdin": true,
        "StdinOnce": true, "AttachStdin": true, "Labels": {"job": "7"},
        "HostConfig": {
            "AutoRemove": true, "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"],
            "ReadonlyRootfs": true, "NetworkMode": "none", "Memory": 536870912,
            "NanoCpus": 1000000000, "PidsLimit": 100, "MemorySwap": 0,
            "LogConfig": {"Type": "", "Config": {}}, "RestartPolicy": {"Name": "no"},
            "Devices": [], "Dns": [], "ConsoleSize": [0, 0], "Ulimits": [{"Name": "nofile", "Soft": 512, "Hard": 512}]
        },
        "NetworkingConfig": {"EndpointsConfig": {"none": {}}}
    }));
    let s = server("");
    let m = map_create(&b, None, &s).unwrap();
    assert!(m.auto_remove && m.stdin_once && m.main.stdin && !m.main.tty);
    assert_eq!(m.main.argv, ["echo", "hi"]);
    assert_eq!(m.labels.get("job").map(String::as_str), Some("7"));
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let docker = m.validate(&HostPolicyEnv).unwrap();
    let flags = Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                image: Some("busybox".into()),
                memory: Some("512M".into()),
                cpus: Some("1".into()),
                pids: Some("100".into()),
                env: vec!["K=V".into()],
                user: Some("1000:1000".into()),
                ..Default::default()
            },
            &HostPolicyEnv,
        )
        .unwrap();
    // The same confinement: everything but where the command runs and its rlimit.
    assert_eq!(docker.user, flags.user);
    assert_eq!(docker.env, flags.env);
    assert_eq!(docker.limits.memory, flags.limits.memory);
    assert_eq!(docker.limits.cpu_millis, flags.limits.cpu_millis);
    assert_eq!(docker.limits.pids, flags.limits.pids);
    assert_eq!(docker.limits.nofile, 512);
    assert_eq!(docker.read_only_root, flags.read_only_root);
    assert_eq!(docker.network, flags.network);
    assert_eq!(docker.cap_add, flags.cap_add);
    assert_eq!(docker.seccomp, flags.seccomp);
    assert_eq!(docker.apparmor, flags.apparmor);
    assert!(docker.no_new_privileges);
    assert_eq!(docker.cwd, "/tmp");
}

#[test]
fn the_image_config_is_merged_as_docker_merges_it() {
    let image = ImageConfig {
        env: vec!["PATH=/opt/bin:/bin".into(), "A=1".into()],
        entrypoint: vec!["/entry".into()],
        cmd: vec!["default".into()],
        working_dir: "/app".into(),
        user: "7".into(),
    };
    let s = server("");
    // (request, argv, cwd, user)
    let cases: [(serde_json::Value, &[&str], &str, &str); 4] = [
        (json!({"Cmd": null}), &["/entry", "default"], "/app", "7:7"),
        (json!({"Cmd": ["x"]}), &["/entry", "x"], "/app", "7:7"),
        (
            json!({"Cmd": null, "Entrypoint": ["/other"], "User": "0", "WorkingDir": "/w"}),
            &["/other"],
            "/w",
            "0:0",
        ),
        (
            json!({"Cmd": ["sh"], "Entrypoint": [""]}),
            &["sh"],
            "/app",
            "7:7",
        ),
    ];
    for (req, argv, cwd, user) in cases {
        let m = map_create(&body(req.clone()), Some(&image), &s).unwrap();
        assert_eq!(m.main.argv, argv, "{req}");
        let v = m.validate(&HostPolicyEnv).unwrap();
        assert_eq!(v.cwd, cwd, "{req}");
        assert_eq!(format!("{}:{}", v.user.uid, v.user.gid), user, "{req}");
    }
    let m = map_create(&body(json!({"Env": ["A=2"]})), Some(&image), &s).unwrap();
    let v = m.validate(&HostPolicyEnv).unwrap();
    assert!(v.env.contains(&"A=2".to_string()) && !v.env.contains(&"A=1".to_string()));
    assert!(v.env.contains(&"PATH=/opt/bin:/bin".to_string()));
    // No user anywhere: stockade's default (a UID of the sandbox's own).
    let m = map_create(&body(json!({})), None, &s).unwrap();
    assert!(m.validate(&HostPolicyEnv).unwrap().uid_per_sandbox);
}

#[test]
fn the_server_policy_is_default_and_ceiling_and_its_loosenings_only_are_grantable() {
    let s = server("[limits]\nmemory = \"256Mi\"\npids = 50\n[security]\nseccomp = \"unconfined\"\n[filesystem]\nread_write_root = false\n");
    let m = map_create(&body(json!({})), None, &s).unwrap();
    assert_eq!(
        m.warnings,
        ["HostConfig.ReadonlyRootfs: this server's policy keeps every root filesystem read-only"]
    );
    let v = m.validate(&HostPolicyEnv).unwrap();
    assert_eq!((v.limits.memory, v.limits.pids), (256 << 20, 50));
    assert!(v.read_only_root);
    let r = map(&host(json!({"Memory": 300 << 20}))).map(|_| ());
    assert!(r.is_ok(), "the built-in ceiling is 512 MiB");
    let r = map_create(&host(json!({"Memory": 300 << 20})), None, &s).unwrap_err();
    assert_eq!(r.status, 403);
    // seccomp=unconfined only where the server has it off already.
    let m = map_create(
        &host(json!({"SecurityOpt": ["seccomp=unconfined"]})),
        None,
        &s,
    )
    .unwrap();
    assert_eq!(m.overrides.seccomp.as_deref(), Some("unconfined"));
    // Without the server's say, a writable root is Docker's default.
    let m = map_create(&body(json!({})), None, &server("")).unwrap();
    assert!(m.overrides.read_write_root);
    // Accepted without effect: said so.
    let m = map_create(
        &host(json!({"CpuShares": 512, "Dns": ["1.1.1.1"]})),
        None,
        &server(""),
    )
    .unwrap();
    assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
}

#[test]
fn binds_mounts_and_tmpfs_become_the_policys_mounts() {
    let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let src = dir.path().display().to_string();
    let b = host(json!({
        "Binds": [format!("{src}:/data:ro")],
        "Mounts": [
            {"Type": "bind", "Source": src, "Target": "/out"},
            {"Type": "tmpfs", "Target": "/cache", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448}},
        ],
        "Tmpfs": {"/scratch": "exec,size=2m", "/tmp": "size=100m"},
    }));
    let mut srv = server("");
    srv.allow_bind = vec![PathBuf::from("/tmp")];
    let m = map_create(&b, None, &srv).unwrap();
    assert!(
        m.warnings
            .iter()
            .any(|w| w.starts_with("HostConfig.Tmpfs: `/tmp`")),
        "{:?}",
        m.warnings
    );
    let v = m.validate(&HostPolicyEnv).unwrap();
    let binds: Vec<(String, bool)> = v
        .binds
        .iter()
        .map(|b| (b.destination.clone(), b.read_only))
        .collect();
    assert_eq!(
        binds,
        [("/data".to_string(), true), ("/out".to_string(), false)]
    );
    let tmpfs: Vec<(String, u64, u32, bool)> = v
        .tmpfs
        .iter()
        .map(|t| (t.destination.clone(), t.size, t.mode, t.exec))
        .collect();
    assert_eq!(
        tmpfs,
        [
            ("/scratch".to_string(), 2 << 20, 0o1777, true),
            ("/cache".to_string(), 1 << 20, 0o700, false),
        ]
    );
    assert_eq!(v.limits.tmp_size, 100 << 20);
}

#[test]
fn volumes_where_a_bind_lands_are_covered_by_it_as_docker_py_sends_them() {
    let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let src = dir.path().display().to_string();
    let mut b = host(json!({"Binds": [format!("{src}:/workspace:rw")]}));
    b.volumes = Some(
        [("/workspace".to_string(), json!({}))]
            .into_iter()
            .collect(),
    );
    let mut srv = server("");
    srv.allow_bind = vec![PathBuf::from("/tmp")];
    assert!(map_create(&b, None, &srv).is_ok());
    b.volumes = Some([("/other".to_string(), json!({}))].into_iter().collect());
    let e = map_create(&b, None, &srv).unwrap_err();
    assert_eq!(e.status, 400);
    assert!(
        e.message
            .starts_with("Volumes: `/other`: anonymous volumes"),
        "{}",
        e.message
    );
}
