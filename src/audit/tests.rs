use proptest::prelude::*;
use serde_json::{json, Value};

use super::locate::locate;
use super::syscalls::{self, Effect};
use super::*;

/// A spec with every protection the catalog asks for: it must raise no finding at all, so
/// each table row below proves its rule fires on exactly the weakness it adds.
fn clean() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 1000, "gid": 1000},
            "args": ["sh"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_NET_BIND_SERVICE"], "effective": ["CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}
            ],
            "noNewPrivileges": true,
            "apparmorProfile": "stockade-default"
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "ro"]},
            {"destination": "/input", "type": "bind", "source": "/srv/input", "options": ["rbind", "ro"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "cgroup"}, {"type": "user"}
            ],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "resources": {
                "devices": [
                    {"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": true, "type": "c", "access": "m"}
                ],
                "memory": {"limit": 536870912},
                "cpu": {"quota": 100000, "period": 100000},
                "pids": {"limit": 256}
            },
            "sysctl": {"net.ipv4.ping_group_range": "0 0"},
            "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                    {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                    {"names": ["mount", "ptrace"], "action": "SCMP_ACT_KILL_PROCESS"}
                ]
            },
            "maskedPaths": [
                "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        },
        "hooks": {"startContainer": [{"path": "/bin/true"}]}
    })
}

fn audit_value(v: &Value) -> Report {
    audit_json(&v.to_string()).expect("test spec parses")
}

/// Sets (or, with `Value::Null`, removes) the field at `pointer`, creating objects on the way.
fn set(v: &mut Value, pointer: &str, new: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let mut cur = v;
    for tok in parent.split('/').skip(1) {
        cur = match cur {
            Value::Array(a) => &mut a[tok.parse::<usize>().expect("index")],
            Value::Object(o) => o.entry(tok.to_string()).or_insert(json!({})),
            _ => panic!("{pointer}: not a container"),
        };
    }
    match cur {
        Value::Object(o) if new.is_null() => {
            o.remove(key);
        }
        Value::Object(o) => {
            o.insert(key.to_string(), new);
        }
        Value::Array(a) if key == "-" => a.push(new),
        Value::Array(a) => a[key.parse::<usize>().expect("index")] = new,
        _ => panic!("{pointer}: not a container"),
    }
}

#[test]
fn the_clean_spec_raises_nothing() {
    let r = audit_value(&clean());
    assert_eq!(r.findings, vec![], "{r:#?}");
}

struct Case {
    name: &'static str,
    edits: &'static [(&'static str, &'static str)],
    want: &'static str,
    pointer: &'static str,
}

/// Each row weakens the clean spec in one way and names the rule (and pointer) that must
/// report it. A JSON value of `null` removes the field.
const CASES: &[Case] = &[
    Case { name: "sys_admin in bounding", edits: &[("/process/capabilities/bounding/-", "\"CAP_SYS_ADMIN\"")], want: "STK-CAP-001", pointer: "/process/capabilities/bounding/1" },
    Case { name: "lower-case cap name", edits: &[("/process/capabilities/effective/-", "\"sys_module\"")], want: "STK-CAP-001", pointer: "/process/capabilities/effective/1" },
    Case { name: "ptrace cap", edits: &[("/process/capabilities/permitted/-", "\"CAP_SYS_PTRACE\"")], want: "STK-CAP-002", pointer: "/process/capabilities/permitted/1" },
    Case { name: "net_raw", edits: &[("/process/capabilities/bounding/-", "\"CAP_NET_RAW\"")], want: "STK-CAP-003", pointer: "/process/capabilities/bounding/1" },
    Case { name: "unknown cap", edits: &[("/process/capabilities/bounding/-", "\"CAP_FROM_THE_FUTURE\"")], want: "STK-CAP-003", pointer: "/process/capabilities/bounding/1" },
    Case { name: "chown", edits: &[("/process/capabilities/bounding/-", "\"CAP_CHOWN\"")], want: "STK-CAP-004", pointer: "/process/capabilities/bounding/1" },
    Case { name: "ambient", edits: &[("/process/capabilities/ambient", "[\"CAP_NET_BIND_SERVICE\"]")], want: "STK-CAP-005", pointer: "/process/capabilities/ambient" },
    Case { name: "inheritable", edits: &[("/process/capabilities/inheritable", "[\"CAP_NET_BIND_SERVICE\"]")], want: "STK-CAP-005", pointer: "/process/capabilities/inheritable" },
    Case { name: "no pid ns", edits: &[("/linux/namespaces/0", "{\"type\": \"time\"}")], want: "STK-NS-001", pointer: "/linux/namespaces" },
    Case { name: "host netns by path", edits: &[("/linux/namespaces/1/path", "\"/proc/1/ns/net\"")], want: "STK-NS-002", pointer: "/linux/namespaces/1/path" },
    Case { name: "no ipc ns", edits: &[("/linux/namespaces/2", "{\"type\": \"time\"}")], want: "STK-NS-003", pointer: "/linux/namespaces" },
    Case { name: "no uts ns", edits: &[("/linux/namespaces/3", "{\"type\": \"time\"}")], want: "STK-NS-004", pointer: "/linux/namespaces" },
    Case { name: "no mount ns", edits: &[("/linux/namespaces/4", "{\"type\": \"time\"}")], want: "STK-NS-005", pointer: "/linux/namespaces" },
    Case { name: "no cgroup ns", edits: &[("/linux/namespaces/5", "{\"type\": \"time\"}")], want: "STK-NS-006", pointer: "/linux/namespaces" },
    Case { name: "no user ns", edits: &[("/linux/namespaces/6", "{\"type\": \"time\"}"), ("/process/user/uid", "1000")], want: "STK-NS-007", pointer: "/linux/namespaces" },
    Case { name: "netns joined from a sandbox", edits: &[("/linux/namespaces/1/path", "\"/var/run/netns/cni-1\"")], want: "STK-NS-008", pointer: "/linux/namespaces/1/path" },
    Case { name: "no seccomp", edits: &[("/linux/seccomp", "null")], want: "STK-SEC-001", pointer: "/linux/seccomp" },
    Case { name: "default allow", edits: &[("/linux/seccomp/defaultAction", "\"SCMP_ACT_ALLOW\"")], want: "STK-SEC-002", pointer: "/linux/seccomp/defaultAction" },
    Case { name: "default log", edits: &[("/linux/seccomp/defaultAction", "\"SCMP_ACT_LOG\"")], want: "STK-SEC-002", pointer: "/linux/seccomp/defaultAction" },
    Case { name: "bpf allowed", edits: &[("/linux/seccomp/syscalls/0/names/-", "\"bpf\"")], want: "STK-SEC-003", pointer: "/linux/seccomp/syscalls/0" },
    Case { name: "clone3 allowed", edits: &[("/linux/seccomp/syscalls/0/names/-", "\"clone3\"")], want: "STK-SEC-003", pointer: "/linux/seccomp/syscalls/0" },
    Case { name: "denied call re-allowed by a later rule", edits: &[("/linux/seccomp/syscalls/-", "{\"names\": [\"mount\"], \"action\": \"SCMP_ACT_ALLOW\"}")], want: "STK-SEC-003", pointer: "/linux/seccomp/syscalls/3" },
    Case { name: "clone without the namespace mask", edits: &[("/linux/seccomp/syscalls/1/args/0/value", "256")], want: "STK-SEC-004", pointer: "/linux/seccomp/syscalls/1" },
    Case { name: "keyctl for some args", edits: &[("/linux/seccomp/syscalls/-", "{\"names\": [\"keyctl\"], \"action\": \"SCMP_ACT_ALLOW\", \"args\": [{\"index\": 0, \"value\": 1, \"op\": \"SCMP_CMP_EQ\"}]}")], want: "STK-SEC-004", pointer: "/linux/seccomp/syscalls/3" },
    Case { name: "mount to a notifier", edits: &[("/linux/seccomp/syscalls/2/action", "\"SCMP_ACT_NOTIFY\"")], want: "STK-SEC-005", pointer: "/linux/seccomp/syscalls/2" },
    Case { name: "no LSM", edits: &[("/process/apparmorProfile", "null")], want: "STK-MAC-001", pointer: "/process/apparmorProfile" },
    Case { name: "apparmor unconfined", edits: &[("/process/apparmorProfile", "\"unconfined\"")], want: "STK-MAC-002", pointer: "/process/apparmorProfile" },
    Case { name: "selinux spc_t", edits: &[("/process/selinuxLabel", "\"system_u:system_r:spc_t:s0\"")], want: "STK-MAC-002", pointer: "/process/selinuxLabel" },
    Case { name: "nnp unset", edits: &[("/process/noNewPrivileges", "null")], want: "STK-PROC-001", pointer: "/process/noNewPrivileges" },
    Case { name: "nnp false", edits: &[("/process/noNewPrivileges", "false")], want: "STK-PROC-001", pointer: "/process/noNewPrivileges" },
    Case { name: "root without userns", edits: &[("/process/user/uid", "0"), ("/linux/uidMappings/0/hostID", "0")], want: "STK-PROC-002", pointer: "/process/user/uid" },
    Case { name: "no user object is root", edits: &[("/process/user", "null"), ("/linux/uidMappings", "null")], want: "STK-PROC-002", pointer: "/process/user/uid" },
    Case { name: "no nofile", edits: &[("/process/rlimits/0", "{\"type\": \"RLIMIT_NPROC\", \"hard\": 10, \"soft\": 10}")], want: "STK-PROC-003", pointer: "/process/rlimits" },
    Case { name: "core allowed", edits: &[("/process/rlimits/1/hard", "4096")], want: "STK-PROC-004", pointer: "/process/rlimits/1" },
    Case { name: "writable root", edits: &[("/root/readonly", "null")], want: "STK-FS-001", pointer: "/root/readonly" },
    Case { name: "host /etc", edits: &[("/mounts/2/source", "\"/etc\"")], want: "STK-FS-002", pointer: "/mounts/2/source" },
    Case { name: "host /var contains kubelet", edits: &[("/mounts/2/source", "\"/var/\"")], want: "STK-FS-002", pointer: "/mounts/2/source" },
    Case { name: "host /proc/sys", edits: &[("/mounts/2/source", "\"/proc/sys\"")], want: "STK-FS-002", pointer: "/mounts/2/source" },
    Case { name: "rw /etc/passwd", edits: &[("/mounts/2/source", "\"/etc/passwd\""), ("/mounts/2/options", "[\"rbind\", \"rw\"]")], want: "STK-FS-002", pointer: "/mounts/2/source" },
    Case { name: "docker socket", edits: &[("/mounts/2/source", "\"/var/run/docker.sock\"")], want: "STK-FS-003", pointer: "/mounts/2/source" },
    Case { name: "containerd socket dir", edits: &[("/mounts/2/source", "\"/run/containerd\"")], want: "STK-FS-003", pointer: "/mounts/2/source" },
    Case { name: "rootless docker socket", edits: &[("/mounts/2/source", "\"/run/user/1000/docker.sock\"")], want: "STK-FS-003", pointer: "/mounts/2/source" },
    Case { name: "rw bind", edits: &[("/mounts/2/options", "[\"rbind\"]")], want: "STK-FS-004", pointer: "/mounts/2/options" },
    Case { name: "ro then rw", edits: &[("/mounts/2/options", "[\"ro\", \"rbind\", \"rw\"]")], want: "STK-FS-004", pointer: "/mounts/2/options" },
    Case { name: "bind by option, no type", edits: &[("/mounts/2/type", "null"), ("/mounts/2/options", "[\"bind\"]")], want: "STK-FS-004", pointer: "/mounts/2/options" },
    Case { name: "rshared mount", edits: &[("/mounts/2/options", "[\"rbind\", \"ro\", \"rshared\"]")], want: "STK-FS-005", pointer: "/mounts/2/options" },
    Case { name: "shared rootfs", edits: &[("/linux/rootfsPropagation", "\"shared\"")], want: "STK-FS-005", pointer: "/linux/rootfsPropagation" },
    Case { name: "kcore unmasked", edits: &[("/linux/maskedPaths/1", "\"/proc/asound\"")], want: "STK-FS-006", pointer: "/linux/maskedPaths" },
    Case { name: "proc/sys writable", edits: &[("/linux/readonlyPaths/3", "\"/proc/asound\"")], want: "STK-FS-007", pointer: "/linux/readonlyPaths" },
    Case { name: "sysfs rw", edits: &[("/mounts/1/options", "[\"nosuid\"]")], want: "STK-FS-008", pointer: "/mounts/1/options" },
    Case { name: "allow all devices last", edits: &[("/linux/resources/devices/-", "{\"allow\": true, \"type\": \"a\", \"access\": \"rwm\"}")], want: "STK-DEV-001", pointer: "/linux/resources/devices/3" },
    Case { name: "block device", edits: &[("/linux/resources/devices/-", "{\"allow\": true, \"type\": \"b\", \"major\": 8, \"access\": \"r\"}")], want: "STK-DEV-002", pointer: "/linux/resources/devices/3" },
    Case { name: "every char device rw", edits: &[("/linux/resources/devices/2/access", "\"rwm\"")], want: "STK-DEV-002", pointer: "/linux/resources/devices/2" },
    Case { name: "/dev/mem", edits: &[("/linux/resources/devices/1/minor", "1")], want: "STK-DEV-002", pointer: "/linux/resources/devices/1" },
    Case { name: "block node", edits: &[("/linux/devices", "[{\"path\": \"/dev/sda\", \"type\": \"b\", \"major\": 8, \"minor\": 0}]")], want: "STK-DEV-002", pointer: "/linux/devices/0" },
    Case { name: "no deny-all", edits: &[("/linux/resources/devices/0", "{\"allow\": false, \"type\": \"c\", \"major\": 10, \"access\": \"rwm\"}")], want: "STK-DEV-003", pointer: "/linux/resources/devices" },
    Case { name: "no memory limit", edits: &[("/linux/resources/memory", "null")], want: "STK-RES-001", pointer: "/linux/resources/memory/limit" },
    Case { name: "memory -1", edits: &[("/linux/resources/memory/limit", "-1")], want: "STK-RES-001", pointer: "/linux/resources/memory/limit" },
    Case { name: "shares only", edits: &[("/linux/resources/cpu", "{\"shares\": 512}")], want: "STK-RES-002", pointer: "/linux/resources/cpu" },
    Case { name: "no pids", edits: &[("/linux/resources/pids", "null")], want: "STK-RES-003", pointer: "/linux/resources/pids/limit" },
    Case { name: "core_pattern", edits: &[("/linux/sysctl/kernel.core_pattern", "\"|/bin/sh\"")], want: "STK-SYS-001", pointer: "/linux/sysctl/kernel.core_pattern" },
    Case { name: "net sysctl with host netns", edits: &[("/linux/namespaces/1", "{\"type\": \"time\"}")], want: "STK-SYS-001", pointer: "/linux/sysctl/net.ipv4.ping_group_range" },
    Case { name: "unsafe namespaced sysctl", edits: &[("/linux/sysctl/net.ipv4.ip_forward", "\"1\"")], want: "STK-SYS-002", pointer: "/linux/sysctl/net.ipv4.ip_forward" },
    Case { name: "prestart hook", edits: &[("/hooks/prestart", "[{\"path\": \"/usr/bin/hook\"}]")], want: "STK-HOOK-001", pointer: "/hooks/prestart/0" },
    Case { name: "createRuntime hook", edits: &[("/hooks/createRuntime", "[{\"path\": \"/usr/bin/hook\"}]")], want: "STK-HOOK-001", pointer: "/hooks/createRuntime/0" },
];

#[test]
fn each_weakness_raises_its_rule_at_its_field() {
    for c in CASES {
        let mut v = clean();
        for (pointer, value) in c.edits {
            set(
                &mut v,
                pointer,
                serde_json::from_str(value).expect("edit value"),
            );
        }
        let r = audit_value(&v);
        assert!(
            r.findings
                .iter()
                .any(|f| f.rule == c.want && f.pointer == c.pointer),
            "{}: want {} at {}, got {:#?}",
            c.name,
            c.want,
            c.pointer,
            r.findings
        );
    }
}

#[test]
fn every_rule_has_a_case() {
    for r in RULES {
        assert!(
            CASES.iter().any(|c| c.want == r.id),
            "{} has no case in CASES",
            r.id
        );
    }
}

#[test]
fn catalog_ids_are_unique_well_formed_and_sorted_by_area() {
    let mut seen = std::collections::BTreeSet::new();
    for r in RULES {
        assert!(seen.insert(r.id), "duplicate id {}", r.id);
        let parts: Vec<&str> = r.id.split('-').collect();
        assert_eq!(parts.len(), 3, "{}", r.id);
        assert_eq!(parts[0], "STK");
        assert!(parts[1].chars().all(|c| c.is_ascii_uppercase()), "{}", r.id);
        assert!(parts[2].len() == 3 && parts[2].chars().all(|c| c.is_ascii_digit()));
        assert!(!r.title.is_empty() && !r.rationale.is_empty() && !r.remediation.is_empty());
        assert!(
            !r.title.ends_with('.'),
            "{}: titles are one line, no period",
            r.id
        );
    }
}

#[test]
fn missing_fields_are_absent_not_defaults() {
    // Nothing but the version: no process, no namespaces, no seccomp, no limits.
    let r = audit_json(r#"{"ociVersion": "1.0.2"}"#).unwrap();
    for id in [
        "STK-SEC-001",
        "STK-NS-001",
        "STK-NS-002",
        "STK-NS-005",
        "STK-FS-001",
        "STK-FS-006",
        "STK-FS-007",
        "STK-DEV-003",
        "STK-RES-001",
        "STK-RES-002",
        "STK-RES-003",
    ] {
        assert!(r.has(id), "{id} missing from {r:#?}");
    }
    // Without a process there is no user, capability or LSM to judge.
    assert!(!r.has("STK-PROC-002") && !r.has("STK-CAP-001") && !r.has("STK-MAC-001"));
}

#[test]
fn typed_and_json_audits_agree_on_a_spec_built_by_oci_spec() {
    let spec = oci_spec::runtime::Spec::default();
    let typed = audit(&spec);
    let text = serde_json::to_string(&spec).unwrap();
    assert_eq!(typed, audit_json(&text).unwrap());
    // oci-spec's default is runc's default spec: no seccomp, root.
    assert!(typed.has("STK-SEC-001") && typed.has("STK-PROC-002"));
}

#[test]
fn malformed_input_is_an_error_naming_the_place() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("{", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (r#"{"process": {}}"#, "ociVersion"),
        (r#"{"ociVersion": 1}"#, "ociVersion"),
        (
            "{\"ociVersion\": \"1.0.2\",\n \"process\": {\"user\": {\"uid\": \"root\"}}}",
            "line 2",
        ),
        (
            r#"{"ociVersion": "1.0.2", "linux": {"namespaces": [{"path": "/x"}]}}"#,
            "missing field `type`",
        ),
    ];
    for (text, want) in cases {
        let e = audit_json(text).expect_err(text).to_string();
        assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
        assert!(!e.contains('\n'), "one line: {e:?}");
    }
}

// ---- seccomp semantics ------------------------------------------------------------------

fn seccomp(v: Value) -> model::SeccompView {
    serde_json::from_value(v).unwrap()
}

#[test]
fn seccomp_effects_follow_actions_and_conditions() {
    let allow_clone_masked =
        json!({"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"});
    let s = seccomp(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [allow_clone_masked]},
            {"names": ["unshare"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0x10000000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE"},
            {"names": ["bpf"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["bpf"], "action": "SCMP_ACT_LOG"},
            {"names": ["keyctl"], "action": "SCMP_ACT_SOMETHING_NEW"}
        ]
    }));
    assert_eq!(
        syscalls::effect(&s, "read"),
        Effect::Allowed { rule: Some(0) }
    );
    assert_eq!(
        syscalls::effect(&s, "clone"),
        Effect::AllowedIf {
            rule: Some(1),
            safe: true
        }
    );
    // Masking only CLONE_NEWUSER leaves the other namespace flags open.
    assert_eq!(
        syscalls::effect(&s, "unshare"),
        Effect::AllowedIf {
            rule: Some(2),
            safe: false
        }
    );
    assert_eq!(
        syscalls::effect(&s, "ptrace"),
        Effect::Delegated { rule: Some(3) }
    );
    // Two unconditional rules disagree: the permissive one is reported.
    assert_eq!(
        syscalls::effect(&s, "bpf"),
        Effect::Allowed { rule: Some(5) }
    );
    // An action the audit does not know is not assumed to deny.
    assert_eq!(
        syscalls::effect(&s, "keyctl"),
        Effect::Delegated { rule: Some(6) }
    );
    assert_eq!(syscalls::effect(&s, "mount"), Effect::Denied);

    let deny = seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 0x10000000u64, "valueTwo": 0x10000000u64, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    }));
    assert_eq!(syscalls::effect(&deny, "mount"), Effect::Denied);
    assert_eq!(
        syscalls::effect(&deny, "bpf"),
        Effect::Allowed { rule: None }
    );
    assert_eq!(
        syscalls::effect(&deny, "clone"),
        Effect::AllowedIf {
            rule: Some(1),
            safe: false
        }
    );
}

#[test]
fn socket_with_args_and_safe_clone_raise_nothing() {
    let mut v = clean();
    set(
        &mut v,
        "/linux/seccomp/syscalls/-",
        json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}),
    );
    assert_eq!(audit_value(&v).findings, vec![]);
}

// ---- JSON pointer location -------------------------------------------------------------

#[test]
fn locate_finds_values_and_falls_back_to_the_parent() {
    let text = "{\n  \"a\": {\n    \"b\": [10, {\"c\": \"x/y\"}],\n    \"d~e/f\": 1\n  }\n}\n";
    assert_eq!(locate(text, ""), Some((1, 1)));
    assert_eq!(locate(text, "/a"), Some((2, 8)));
    assert_eq!(locate(text, "/a/b/1/c"), Some((3, 21)));
    assert_eq!(locate(text, "/a/d~0e~1f"), Some((4, 14)));
    assert_eq!(locate(text, "/a/missing"), Some((2, 8)));
    assert_eq!(locate(text, "/a/b/7"), Some((3, 10)));
    assert_eq!(locate("", "/a"), None);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z\"\\\\/ ~é]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z~/\"]{1,4}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn pointers(v: &Value, prefix: String, out: &mut Vec<(String, Value)>) {
    out.push((prefix.clone(), v.clone()));
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{prefix}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                pointers(x, format!("{prefix}/{}", checks::esc(k)), out);
            }
        }
        _ => {}
    }
}

proptest! {
    /// In any pretty or compact JSON document, every pointer lands on the start of the
    /// value it names.
    #[test]
    fn locate_lands_on_the_named_value(v in json_value(), pretty_print in any::<bool>()) {
        let text = if pretty_print { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
        let mut all = Vec::new();
        pointers(&v, String::new(), &mut all);
        for (p, want) in all {
            let (line, col) = locate(&text, &p).expect("located");
            let line_start: usize = text.split_inclusive('\n').take(line - 1).map(str::len).sum();
            let rest: String = text[line_start..].chars().skip(col - 1).collect();
            let mut de = serde_json::Deserializer::from_str(&rest).into_iter::<Value>();
            let got = de.next().expect("a value starts there").expect("valid");
            prop_assert_eq!(got, want, "pointer {}", p);
        }
    }

    /// Arbitrary text never panics the parser; it is a spec or an error.
    #[test]
    fn parse_never_panics(s in "\\PC{0,64}") {
        let _ = parse(&s);
    }
}

// ---- diff ------------------------------------------------------------------------------

#[test]
fn diff_reports_loosening_and_tightening() {
    let old = parse(&clean().to_string()).unwrap();
    let mut v = clean();
    set(
        &mut v,
        "/process/capabilities/bounding/-",
        json!("CAP_SYS_ADMIN"),
    );
    set(&mut v, "/linux/seccomp/syscalls/0/names/-", json!("mount"));
    set(&mut v, "/linux/resources/memory", Value::Null);
    set(&mut v, "/linux/namespaces/1", json!({"type": "time"}));
    set(&mut v, "/linux/resources/pids/limit", json!(64));
    set(
        &mut v,
        "/mounts/-",
        json!({"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"]}),
    );
    let new = parse(&v.to_string()).unwrap();
    let d = diff::diff(&old, &new);
    let has = |dir: diff::Direction, needle: &str| {
        d.changes
            .iter()
            .any(|c| c.direction == dir && c.message.contains(needle))
    };
    use diff::Direction::{Loosened, Tightened};
    assert!(has(Loosened, "CAP_SYS_ADMIN gained in bounding"), "{d:#?}");
    assert!(has(Loosened, "mount: denied → allowed"), "{d:#?}");
    assert!(
        has(Loosened, "memory limit 536870912 → unlimited"),
        "{d:#?}"
    );
    assert!(
        has(Loosened, "network namespace: its own → the host's"),
        "{d:#?}"
    );
    assert!(has(Tightened, "pids limit 256 → 64"), "{d:#?}");
    assert!(has(Loosened, "mount added: /data bind /srv"), "{d:#?}");
    assert!(d.new_findings.iter().any(|f| f.rule == "STK-CAP-001"));
    assert!(d.resolved_findings.is_empty());
    // Same spec: nothing to say.
    let same = diff::diff(&old, &old);
    assert_eq!(same, diff::Diff::default());
}
