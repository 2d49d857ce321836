//! Fuzzing the parsers that take untrusted text: sandbox policies (TOML and command-line
//! values) and seccomp profiles (Docker's JSON format). Property: no input makes them
//! panic, every rejection is one line, and what they accept goes through the next stage
//! (validation; OCI conversion and BPF compilation) without panicking either.
//!
//! Four kinds of input: arbitrary text, documents built from each format's grammar with
//! hostile values, and random mutations (byte flips, insertions, deletions, splices) of
//! the real built-in profiles and example policies. `STOCKADE_FUZZ_CASES` multiplies the
//! number of cases (default 1) for longer sessions.

mod common;

use std::path::PathBuf;

use common::policy_env::FakePolicyEnv;
use oci_spec::runtime::PosixRlimitType;
use proptest::prelude::*;
use proptest::test_runner::Config;
use stockade::host::HostFacts;
use stockade::policy::{parse_duration, parse_size, Policy, PolicyOverrides, ValidatedPolicy};
use stockade::seccomp::{builtin_profile, compile, Profile, TargetArch};
use stockade::spec::{self, SpecRequest};

/// `base` cases, times `STOCKADE_FUZZ_CASES`.
fn cases(base: u32) -> Config {
    let factor: u32 = std::env::var("STOCKADE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Config {
        cases: base.saturating_mul(factor.max(1)),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Whether a property also demands one-line errors (the project's rule for every
/// user-facing error), or only the absence of panics.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Errors {
    AnyText,
    OneLine,
}

fn check_error(e: &impl std::fmt::Display, errors: Errors) -> Result<(), TestCaseError> {
    let s = e.to_string();
    prop_assert!(!s.trim().is_empty(), "an empty error");
    if errors == Errors::OneLine {
        prop_assert!(!s.contains('\n'), "a multi-line error: {s:?}");
    }
    Ok(())
}

// --- values that break parsers -----------------------------------------------------------

/// Strings chosen to hit edge cases of sizes, durations, numbers, names and paths.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1e309".to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("18446744073709551616".to_string()),
        // u64::MAX (RLIM_INFINITY; -1 as an i64), i64::MAX + 1, and the largest binary
        // multiples below and above 1 PiB.
        Just("18446744073709551615".to_string()),
        Just("9223372036854775808".to_string()),
        Just("9223372036854775807".to_string()),
        Just("16777215T".to_string()),
        Just("1025Ti".to_string()),
        Just("1024Ti".to_string()),
        Just("9223372036854775808Ki".to_string()),
        Just("99999999999999999999999T".to_string()),
        Just("16Ei".to_string()),
        Just("1.5Gi".to_string()),
        Just("0.0000001s".to_string()),
        Just("584942418h".to_string()),
        Just("18446744073709551615s".to_string()),
        Just("1h1m".to_string()),
        Just("ms".to_string()),
        Just("٣s".to_string()),
        Just("１０M".to_string()),
        Just("0:0".to_string()),
        Just("4294967295:4294967295".to_string()),
        Just("65534:".to_string()),
        Just(":0".to_string()),
        Just("root".to_string()),
        Just("CAP_SYS_ADMIN".to_string()),
        Just("sys_admin".to_string()),
        Just("NET_BIND_SERVICE".to_string()),
        Just("unconfined".to_string()),
        Just("default".to_string()),
        Just("strict".to_string()),
        Just("/".to_string()),
        Just("/../..".to_string()),
        Just("relative/path".to_string()),
        Just("/tmp/\u{0}nul".to_string()),
        Just("loopback".to_string()),
        Just("host".to_string()),
        Just("K=V".to_string()),
        Just("=V".to_string()),
        Just("K".to_string()),
        Just("PATH=".to_string()),
        Just("a\nb".to_string()),
        "[0-9]{1,25}(\\.[0-9]{1,5})?(|b|B|k|K|Ki|M|Mi|G|Gi|T|Ti|E|ms|s|m|h|d|us|ns)",
        "[ -~]{0,40}",
        any::<String>().prop_map(|s| s.chars().take(60).collect()),
    ]
}

/// A TOML value of any type, hostile strings and extreme numbers included.
fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        hostile_string().prop_map(|s| toml::Value::String(s).to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
            Just(-1),
            Just(65534),
            Just(i64::from(u32::MAX) + 1)
        ]
        .prop_map(|i| i.to_string()),
        prop_oneof![
            Just("nan"),
            Just("inf"),
            Just("-inf"),
            Just("0.0"),
            Just("-0.5"),
            Just("1e308"),
            Just("0.001"),
            Just("1000000.0")
        ]
        .prop_map(str::to_string),
        any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

/// Every key the policy format knows, by table, plus unknown ones.
const POLICY_KEYS: &[(&str, &[&str])] = &[
    ("", &["image"]),
    ("process", &["user", "env", "cwd", "hostname"]),
    (
        "limits",
        &[
            "memory",
            "cpus",
            "pids",
            "nofile",
            "nproc",
            "fsize",
            "timeout",
            "max_output",
            "tmp_size",
            "shm_size",
            "io_weight",
            "oom_score_adj",
            "disk",
        ],
    ),
    ("network", &["mode"]),
    (
        "filesystem",
        &["read_write_root", "workspace", "input", "workspace_size"],
    ),
    (
        "security",
        &["cap_add", "seccomp", "apparmor", "no_new_privileges"],
    ),
    ("security.user_namespace", &["host_id", "size"]),
    ("unknown_table", &["unknown"]),
];

/// A policy document: some tables, each with some keys (known or not) and hostile values.
fn policy_document() -> impl Strategy<Value = String> {
    let entry = (0..POLICY_KEYS.len()).prop_flat_map(|t| {
        let (table, keys) = POLICY_KEYS[t];
        let key = prop_oneof![
            4 => prop::sample::select(keys.to_vec()).prop_map(str::to_string),
            1 => "[a-z_]{1,10}",
        ];
        (
            Just(table),
            prop::collection::vec((key, toml_value()), 0..5),
        )
    });
    prop::collection::vec(entry, 0..6).prop_map(|tables| {
        let mut doc = String::new();
        for (table, kvs) in tables {
            if !table.is_empty() {
                doc.push_str(&format!("[{table}]\n"));
            }
            for (k, v) in kvs {
                doc.push_str(&format!("{k} = {v}\n"));
            }
        }
        doc
    })
}

fn overrides() -> impl Strategy<Value = PolicyOverrides> {
    let opt = || prop::option::weighted(0.3, hostile_string());
    (
        (opt(), opt(), opt(), opt(), opt(), opt()),
        (opt(), opt(), opt(), opt(), opt(), opt()),
        (
            prop::collection::vec(hostile_string(), 0..3),
            prop::collection::vec(hostile_string(), 0..2),
            prop::option::weighted(0.2, hostile_string().prop_map(PathBuf::from)),
            prop::option::weighted(0.2, hostile_string().prop_map(PathBuf::from)),
            any::<bool>(),
        ),
        (
            // Hostile `-v` and `--tmpfs` values, through the same parsers the CLI uses.
            prop::collection::vec(hostile_string(), 0..3),
            prop::collection::vec(hostile_string(), 0..3),
            opt(),
        ),
    )
        .prop_map(
            |(
                (image, memory, cpus, pids, timeout, network),
                (user, max_output, seccomp, apparmor, disk, workspace_size),
                (env, cap_add, workspace, input, read_write_root),
                (volumes, tmpfs, cwd),
            )| PolicyOverrides {
                mounts: volumes
                    .iter()
                    .filter_map(|v| stockade::policy::BindMount::parse(v).ok())
                    .collect(),
                tmpfs: tmpfs
                    .iter()
                    .filter_map(|t| stockade::policy::TmpfsMount::parse(t).ok())
                    .collect(),
                cwd,
                workspace_owner: None,
                allow: env.iter().take(1).cloned().collect(),
                publish: cap_add.iter().take(1).cloned().collect(),
                image,
                memory,
                cpus,
                pids,
                timeout,
                network,
                workspace,
                input,
                env,
                user,
                max_output,
                cap_add,
                seccomp,
                apparmor,
                read_write_root,
                disk,
                workspace_size,
            },
        )
}

// --- seccomp profile grammar ---------------------------------------------------------------

fn json_string() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        prop::sample::select(vec![
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_KILL",
            "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_KILL_THREAD",
            "SCMP_ACT_TRAP",
            "SCMP_ACT_TRACE",
            "SCMP_ACT_LOG",
            "SCMP_ACT_NOTIFY",
            "SCMP_ACT_NOPE",
            "SCMP_CMP_EQ",
            "SCMP_CMP_NE",
            "SCMP_CMP_MASKED_EQ",
            "SCMP_CMP_LT",
            "SCMP_CMP_BOGUS",
            "SCMP_ARCH_X86_64",
            "SCMP_ARCH_AARCH64",
            "SCMP_ARCH_X86",
            "SCMP_ARCH_MIPS",
            "SCMP_ARCH_NOPE",
            "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            "SECCOMP_FILTER_FLAG_TSYNC",
            "read",
            "write",
            "socket",
            "clone",
            "clone3",
            "mount",
            "not_a_syscall",
            "iopl",
            "CAP_SYS_ADMIN",
            "CAP_NOPE",
            "4.8",
            "5.99.99",
            "not-a-version",
            "amd64",
            "arm64",
            "",
        ])
        .prop_map(|s| serde_json::Value::String(s.to_string())),
        hostile_string().prop_map(serde_json::Value::String),
    ]
}

fn json_any() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        json_string(),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(5),
            Just(6),
            Just(38),
            Just(u64::MAX),
            Just(u64::from(u32::MAX))
        ]
        .prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        any::<bool>().prop_map(serde_json::Value::Bool),
        Just(serde_json::Value::Null),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..3)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Either a plausible value for a field or anything at all.
fn field(
    plausible: impl Strategy<Value = serde_json::Value>,
) -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![4 => plausible, 1 => json_any()]
}

fn seccomp_arg() -> impl Strategy<Value = serde_json::Value> {
    (
        field(
            prop_oneof![Just(0u64), Just(1), Just(5), Just(6), Just(7), any::<u64>()]
                .prop_map(serde_json::Value::from),
        ),
        field(any::<u64>().prop_map(serde_json::Value::from)),
        prop::option::of(field(any::<u64>().prop_map(serde_json::Value::from))),
        field(json_string()),
    )
        .prop_map(|(index, value, value_two, op)| {
            let mut o = serde_json::json!({"index": index, "value": value, "op": op});
            if let Some(v2) = value_two {
                o["valueTwo"] = v2;
            }
            o
        })
}

fn seccomp_rule() -> impl Strategy<Value = serde_json::Value> {
    (
        field(prop::collection::vec(json_string(), 0..5).prop_map(serde_json::Value::Array)),
        field(json_string()),
        prop::option::of(field(
            prop::collection::vec(seccomp_arg(), 0..3).prop_map(serde_json::Value::Array),
        )),
        prop::option::of(field(any::<u32>().prop_map(serde_json::Value::from))),
        prop::option::of(json_any()),
        prop::option::of(json_any()),
        prop::option::of(json_string()),
    )
        .prop_map(
            |(names, action, args, errno, includes, excludes, comment)| {
                let mut r = serde_json::json!({"names": names, "action": action});
                if let Some(a) = args {
                    r["args"] = a;
                }
                if let Some(e) = errno {
                    r["errnoRet"] = e;
                }
                if let Some(i) = includes {
                    r["includes"] = i;
                }
                if let Some(e) = excludes {
                    r["excludes"] = e;
                }
                if let Some(c) = comment {
                    r["comment"] = c;
                }
                r
            },
        )
}

fn seccomp_document() -> impl Strategy<Value = String> {
    (
        field(json_string()),
        prop::option::of(field(any::<u32>().prop_map(serde_json::Value::from))),
        prop::option::of(field(
            prop::collection::vec(json_string(), 0..3).prop_map(serde_json::Value::Array),
        )),
        prop::option::of(json_any()),
        prop::option::of(field(
            prop::collection::vec(json_string(), 0..3).prop_map(serde_json::Value::Array),
        )),
        prop::collection::vec(seccomp_rule(), 0..6),
        prop::option::of(("[a-zA-Z]{1,12}", json_any())),
    )
        .prop_map(
            |(default_action, errno, arches, arch_map, flags, rules, extra)| {
                let mut d = serde_json::json!({"defaultAction": default_action, "syscalls": rules});
                if let Some(e) = errno {
                    d["defaultErrnoRet"] = e;
                }
                if let Some(a) = arches {
                    d["architectures"] = a;
                }
                if let Some(m) = arch_map {
                    d["archMap"] = m;
                }
                if let Some(f) = flags {
                    d["flags"] = f;
                }
                if let Some((k, v)) = extra {
                    d[k] = v;
                }
                d.to_string()
            },
        )
}

/// A random edit of `text`: flip, insert, delete or duplicate a span.
fn mutation_of(text: &'static str) -> impl Strategy<Value = String> {
    let len = text.len();
    prop::collection::vec((0..len.max(1), 0..4u8, any::<u8>(), 0..64usize), 1..6).prop_map(
        move |edits| {
            let mut b = text.as_bytes().to_vec();
            for (pos, kind, byte, span) in edits {
                let pos = pos.min(b.len());
                let end = (pos + span).min(b.len());
                match kind {
                    0 if pos < b.len() => b[pos] ^= byte | 1,
                    1 => b.insert(pos, byte),
                    2 => {
                        b.drain(pos..end);
                    }
                    _ => {
                        let piece = b[pos..end].to_vec();
                        b.splice(pos..pos, piece);
                    }
                }
            }
            String::from_utf8_lossy(&b).into_owned()
        },
    )
}

/// Parses a profile and pushes what it accepts through every later stage. Seccomp errors
/// are always required to be one line.
fn exercise_profile(text: &str) -> Result<(), TestCaseError> {
    let one_line = |e: &dyn std::fmt::Display| check_error(&e.to_string(), Errors::OneLine);
    match Profile::parse(text) {
        Err(e) => one_line(&e),
        Ok(p) => {
            let _ = p.summary();
            match p.to_oci() {
                Err(e) => one_line(&e),
                Ok(oci) => {
                    if let Some(arch) = TargetArch::native() {
                        if let Err(e) = compile(&oci, arch) {
                            one_line(&e)?;
                        }
                    }
                    Ok(())
                }
            }
        }
    }
}

/// Parses and validates a policy; what validates yields a hash.
fn exercise_policy(
    text: &str,
    o: &PolicyOverrides,
    profile: &str,
    errors: Errors,
) -> Result<(), TestCaseError> {
    // Every absolute directory exists; every file reads as `profile`.
    let env = FakePolicyEnv::new().files_read_as(profile);
    match Policy::from_toml(text, "fuzz.toml") {
        Err(e) => check_error(&e, errors),
        Ok(p) => match p.validate(Some("fuzz.toml"), o, &env) {
            Err(e) => check_error(&e, errors),
            Ok(v) => {
                prop_assert!(!v.hash().is_empty());
                limits_are_real(&v)
            }
        },
    }
}

/// Every limit of an accepted policy reaches the spec as a real limit: memory, swap and
/// pids positive (a negative memory or a pids of 0 or -1 is "unlimited" to runc), no rlimit
/// `RLIM_INFINITY` (`u64::MAX`) or 0 (RLIMIT_CORE aside, which is 0 on purpose), and no
/// tmpfs `size=0` (unbounded).
fn limits_are_real(v: &ValidatedPolicy) -> Result<(), TestCaseError> {
    let args = vec!["true".to_string()];
    let req = SpecRequest {
        id: "fuzz",
        args: &args,
        terminal: false,
    };
    let built = spec::build(v, &HostFacts::hybrid_no_apparmor(), &req);
    let Ok(built) = built else {
        return Ok(());
    };
    let s = &built.spec;
    let r = s.linux().as_ref().and_then(|l| l.resources().as_ref());
    let memory = r.and_then(|r| r.memory().as_ref());
    prop_assert!(
        memory
            .and_then(oci_spec::runtime::LinuxMemory::limit)
            .is_some_and(|m| m > 0),
        "{:?}",
        memory
    );
    prop_assert!(
        memory
            .and_then(oci_spec::runtime::LinuxMemory::swap)
            .is_none_or(|m| m > 0),
        "{:?}",
        memory
    );
    let pids = r
        .and_then(|r| r.pids().as_ref())
        .map(oci_spec::runtime::LinuxPids::limit);
    prop_assert!(pids.is_some_and(|p| p > 0), "pids {:?}", pids);
    let rlimits = s
        .process()
        .as_ref()
        .and_then(|p| p.rlimits().clone())
        .unwrap_or_default();
    for rl in rlimits
        .iter()
        .filter(|r| r.typ() != PosixRlimitType::RlimitCore)
    {
        for n in [rl.hard(), rl.soft()] {
            prop_assert!(n != u64::MAX && n > 0, "{:?}", rl);
        }
    }
    for m in s.mounts().as_deref().unwrap_or_default() {
        for o in m.options().as_deref().unwrap_or_default() {
            prop_assert!(o != "size=0k" && o != "size=0", "{:?}", m);
        }
    }
    Ok(())
}

// --- the properties ----------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn policy_from_arbitrary_text(text in any::<String>()) {
        exercise_policy(&text, &PolicyOverrides::default(), "{}", Errors::OneLine)?;
    }

    #[test]
    fn policy_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        exercise_policy(&text, &PolicyOverrides::default(), "{}", Errors::OneLine)?;
    }

    #[test]
    fn units_from_arbitrary_text(text in prop_oneof![any::<String>(), hostile_string()]) {
        if let Err(e) = parse_size(&text) { check_error(&e, Errors::AnyText)?; }
        if let Err(e) = parse_duration(&text) { check_error(&e, Errors::AnyText)?; }
    }

    /// Values are echoed in errors: a newline in a value must not split the message.
    #[test]
    fn unit_errors_are_one_line(text in prop_oneof![any::<String>(), hostile_string()]) {
        if let Err(e) = parse_size(&text) { check_error(&e, Errors::OneLine)?; }
        if let Err(e) = parse_duration(&text) { check_error(&e, Errors::OneLine)?; }
    }

    #[test]
    fn seccomp_from_arbitrary_text(text in any::<String>()) {
        exercise_profile(&text)?;
    }
}

proptest! {
    #![proptest_config(cases(384))]

    #[test]
    fn policy_documents_with_hostile_values(doc in policy_document(), o in overrides()) {
        exercise_policy(&doc, &o, builtin_profile("default").unwrap(), Errors::AnyText)?;
    }

    /// Flags and policy values are echoed in errors: never as more than one line.
    #[test]
    fn policy_errors_are_one_line(doc in policy_document(), o in overrides()) {
        exercise_policy(&doc, &o, builtin_profile("default").unwrap(), Errors::OneLine)?;
    }

    #[test]
    fn policy_documents_with_fuzzed_profile_files(
        doc in policy_document(),
        profile in seccomp_document(),
    ) {
        let doc = format!("{doc}\n[security]\nseccomp = \"/fuzz/profile.json\"\n");
        exercise_policy(&doc, &PolicyOverrides::default(), &profile, Errors::AnyText)?;
    }

    #[test]
    fn seccomp_documents_from_the_grammar(doc in seccomp_document()) {
        exercise_profile(&doc)?;
    }

    #[test]
    fn seccomp_default_profile_mutated(text in mutation_of(builtin_profile("default").unwrap())) {
        exercise_profile(&text)?;
    }

    #[test]
    fn seccomp_strict_profile_mutated(text in mutation_of(builtin_profile("strict").unwrap())) {
        exercise_profile(&text)?;
    }

    #[test]
    fn example_policies_mutated(
        (i, text) in (0..EXAMPLES.len()).prop_flat_map(|i| (Just(i), mutation_of(EXAMPLES[i]))),
    ) {
        let _ = i;
        exercise_policy(&text, &PolicyOverrides::default(), "{}", Errors::AnyText)?;
    }
}

/// A policy exercising every section, and the shipped examples.
const EXAMPLES: &[&str] = &[r#"
image = "python"
[process]
user = "1000:1000"
env = ["A=1", "B=2"]
cwd = "/workspace"
hostname = "box"
[limits]
memory = "256Mi"
cpus = 0.5
pids = 64
nofile = 512
fsize = "100Mi"
timeout = "30s"
max_output = "1Mi"
tmp_size = "16Mi"
shm_size = "16Mi"
io_weight = 100
oom_score_adj = 900
[network]
mode = "loopback"
[filesystem]
read_write_root = false
workspace = "/tmp/work"
input = "/tmp/in"
[security]
cap_add = ["NET_BIND_SERVICE"]
seccomp = "strict"
apparmor = "unconfined"
no_new_privileges = true
[security.user_namespace]
host_id = 100000
size = 65536
"#];

#[test]
fn the_full_example_policy_validates() {
    // Keeps the mutation seed honest: unmutated, it is a valid policy.
    let env = FakePolicyEnv::new().files_read_as("{}");
    let p = Policy::from_toml(EXAMPLES[0], "example.toml").expect("parses");
    p.validate(Some("example.toml"), &PolicyOverrides::default(), &env)
        .expect("validates");
}

#[test]
fn the_builtin_profiles_parse_compile_and_survive_the_harness() {
    for name in ["default", "strict"] {
        exercise_profile(builtin_profile(name).unwrap()).unwrap();
        let p = Profile::parse(builtin_profile(name).unwrap()).unwrap();
        assert!(p.to_oci().is_ok(), "{name}");
    }
}
