//! Every policy field lands in the spec field it names.

use super::*;
/// One row per policy knob: the TOML that sets it and the spec fields it must change.
#[test]
fn policy_fields_map_to_spec_fields() {
    struct Case {
        name: &'static str,
        toml: &'static str,
        check: fn(&Value),
    }
    let cases = [
        Case {
            name: "memory",
            toml: "[limits]\nmemory = \"256M\"",
            check: |s| {
                assert_eq!(s["linux"]["resources"]["memory"]["limit"], 256 << 20);
                assert_eq!(s["linux"]["resources"]["memory"]["swap"], 256 << 20);
            },
        },
        Case {
            name: "cpus",
            toml: "[limits]\ncpus = 0.5",
            check: |s| {
                assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
                assert_eq!(s["linux"]["resources"]["cpu"]["period"], 100_000);
                assert_eq!(s["linux"]["resources"]["cpu"]["shares"], 512);
            },
        },
        Case {
            name: "pids",
            toml: "[limits]\npids = 64",
            check: |s| assert_eq!(s["linux"]["resources"]["pids"]["limit"], 64),
        },
        Case {
            name: "nofile",
            toml: "[limits]\nnofile = 64",
            check: |s| {
                let r = &s["process"]["rlimits"];
                assert!(r
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["type"] == "RLIMIT_NOFILE" && r["soft"] == 64 && r["hard"] == 64));
            },
        },
        Case {
            name: "nproc",
            toml: "[limits]\nnproc = 77",
            check: |s| {
                let r = &s["process"]["rlimits"];
                assert!(r
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["type"] == "RLIMIT_NPROC" && r["hard"] == 77));
            },
        },
        Case {
            name: "fsize",
            toml: "[limits]\nfsize = \"1M\"",
            check: |s| {
                let r = &s["process"]["rlimits"];
                assert!(r
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["type"] == "RLIMIT_FSIZE" && r["hard"] == 1 << 20));
            },
        },
        Case {
            name: "tmp_size",
            toml: "[limits]\ntmp_size = \"1M\"",
            check: |s| {
                let tmp = s["mounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["destination"] == "/tmp")
                    .unwrap()
                    .clone();
                assert!(sorted(&tmp["options"]).contains(&"size=1024k".to_string()));
            },
        },
        Case {
            name: "shm_size",
            toml: "[limits]\nshm_size = \"2M\"",
            check: |s| {
                let shm = s["mounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["destination"] == "/dev/shm")
                    .unwrap()
                    .clone();
                assert!(sorted(&shm["options"]).contains(&"size=2048k".to_string()));
            },
        },
        Case {
            name: "io_weight",
            toml: "[limits]\nio_weight = 300",
            check: |s| assert_eq!(s["linux"]["resources"]["blockIO"]["weight"], 300),
        },
        Case {
            name: "oom_score_adj",
            toml: "[limits]\noom_score_adj = 1000",
            check: |s| assert_eq!(s["process"]["oomScoreAdj"], 1000),
        },
        Case {
            name: "user",
            toml: "[process]\nuser = \"1000:100\"",
            check: |s| {
                assert_eq!(s["process"]["user"]["uid"], 1000);
                assert_eq!(s["process"]["user"]["gid"], 100);
            },
        },
        Case {
            name: "env",
            toml: "[process]\nenv = [\"A=b\"]",
            check: |s| assert!(sorted(&s["process"]["env"]).contains(&"A=b".to_string())),
        },
        Case {
            name: "cwd",
            toml: "[process]\ncwd = \"/opt\"",
            check: |s| assert_eq!(s["process"]["cwd"], "/opt"),
        },
        Case {
            name: "hostname",
            toml: "[process]\nhostname = \"box\"",
            check: |s| assert_eq!(s["hostname"], "box"),
        },
        Case {
            name: "read_write_root",
            toml: "[filesystem]\nread_write_root = true",
            check: |s| assert_eq!(s["root"]["readonly"], false),
        },
        Case {
            name: "no_new_privileges",
            toml: "[security]\nno_new_privileges = false",
            check: |s| assert_eq!(s["process"]["noNewPrivileges"], false),
        },
        Case {
            name: "apparmor",
            toml: "[security]\napparmor = \"other\"",
            check: |s| assert_eq!(s["process"]["apparmorProfile"], "other"),
        },
        Case {
            name: "apparmor unconfined",
            toml: "[security]\napparmor = \"unconfined\"",
            check: |s| assert!(s["process"].get("apparmorProfile").is_none()),
        },
        Case {
            name: "seccomp unconfined",
            toml: "[security]\nseccomp = \"unconfined\"",
            check: |s| assert!(s["linux"].get("seccomp").is_none()),
        },
        Case {
            name: "seccomp strict",
            toml: "[security]\nseccomp = \"strict\"",
            check: |s| {
                assert_eq!(s["annotations"][ANNOTATION_SECCOMP], "strict");
                assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
            },
        },
        Case {
            name: "cap_add as non-root",
            toml: "[security]\ncap_add = [\"NET_BIND_SERVICE\"]",
            check: |s| {
                // A non-root process keeps a capability across execve only when it is also
                // inheritable and ambient.
                for set in [
                    "bounding",
                    "effective",
                    "permitted",
                    "inheritable",
                    "ambient",
                ] {
                    assert_eq!(
                        s["process"]["capabilities"][set],
                        json!(["CAP_NET_BIND_SERVICE"]),
                        "{set}"
                    );
                }
            },
        },
        Case {
            name: "cap_add as root",
            toml: "[process]\nuser = \"0\"\n[security]\ncap_add = [\"CHOWN\"]",
            check: |s| {
                for set in ["bounding", "effective", "permitted"] {
                    assert_eq!(
                        s["process"]["capabilities"][set],
                        json!(["CAP_CHOWN"]),
                        "{set}"
                    );
                }
                for set in ["inheritable", "ambient"] {
                    assert_eq!(s["process"]["capabilities"][set], json!([]), "{set}");
                }
            },
        },
        Case {
            name: "user namespace",
            toml: "[security.user_namespace]\nhost_id = 300000\nsize = 65536",
            check: |s| {
                assert!(s["linux"]["namespaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n["type"] == "user"));
                let want = json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
                assert_eq!(s["linux"]["uidMappings"], want);
                assert_eq!(s["linux"]["gidMappings"], want);
            },
        },
        Case {
            name: "image",
            toml: "image = \"python\"",
            check: |s| assert_eq!(s["annotations"][ANNOTATION_IMAGE], "python"),
        },
    ];
    for c in cases {
        let p = policy(c.toml, PolicyOverrides::default());
        let (s, _) = build_json(&p, &HostFacts::capable_v2(), false);
        (c.check)(&s);
        // Every change shows in the policy hash the spec carries.
        assert_ne!(
            s["annotations"][ANNOTATION_POLICY_HASH],
            default_json()["annotations"][ANNOTATION_POLICY_HASH],
            "{}",
            c.name
        );
    }
}
